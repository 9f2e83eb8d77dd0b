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
