"""The CLI starts without the heavy model libraries: a command that needs no model imports
none (torch alone is ~700 MB of address space and seconds of start-up, and a memory-capped
run of a catalog command must not fail mapping it)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("torch", "diffusers", "open_clip", "transformers", "imwatermark", "onnxruntime")


def test_importing_the_cli_loads_no_model_library() -> None:
    code = (
        "import sys, tasks.cli, tasks.dispatch, tasks.line.orchestrator\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at start-up: {proc.stdout.strip()}"


# What `shotline --help` must not load: the database layer, data frames, the task queue,
# arrays, images, S3, the web app. Command modules import them when a command runs.
NOT_FOR_HELP = ("sqlalchemy", "pandas", "celery", "kombu", "numpy", "PIL", "boto3", "fastapi")


def _modules_after(*args: str) -> list[str]:
    code = (
        "import sys\n"
        "from tasks.cli import main\n"
        f"sys.argv = ['shotline', *{list(args)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print('loaded:' + ','.join(m for m in {NOT_FOR_HELP!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout  # the help was printed
    loaded = proc.stdout.strip().splitlines()[-1].removeprefix("loaded:")
    return [m for m in loaded.split(",") if m]


def test_help_imports_no_database_queue_or_array_library() -> None:
    assert _modules_after("--help") == []


def test_a_command_group_help_imports_none_either() -> None:
    assert _modules_after("review", "--help") == []
    assert _modules_after("import", "--help") == []


def test_values_written_out_for_help_match_their_source() -> None:
    # Written out in tasks/cli so that --help needs neither SQLAlchemy nor pandas.
    from catalog.db import MAX_ROW_ID
    from catalog.importing.csv_formats import FORMATS
    from tasks.cli.catalog.import_cmd import FORMAT_NAMES
    from tasks.cli.common import MAX_ID

    assert MAX_ID == MAX_ROW_ID
    assert FORMAT_NAMES == FORMATS
