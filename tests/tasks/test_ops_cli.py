"""Running it for real (issue 24): settings as people type them, permanent storage errors,
exit codes and output of ``sources fetch``/``run``/``verify``/``worker``, help ranges, logs
under a progress bar. Services: moto's S3 server, SQLite."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from catalog import migrate
from pipeline.settings import Settings, SettingsInvalid, load_settings
from pipeline.storage import PermanentStorageError, S3BlobStore, StorageError, probe_store
from tasks.cli import app
from tests.conftest import ROOT
from tests.image_server import PNG
from tests.tasks.conftest import make_bucket


def _shotline(env: dict[str, str], *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
    return subprocess.run(
        [sys.executable, "-c", "from tasks.cli import main; main()", *args],
        cwd=kw.get("cwd", ROOT),
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


# --- settings -------------------------------------------------------------------------------


def test_list_settings_accept_comma_separated_text_and_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOTLINE_SOURCE_ALLOW_HOSTS", "127.0.0.1, 10.0.0.0/8")
    monkeypatch.setenv("SHOTLINE_SOURCE_ROOTS", "/srv/a,/srv/b")
    monkeypatch.setenv("SHOTLINE_INGEST_SOURCES", '["s3://b/in/", "/srv/drop"]')
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.source_allow_hosts == ["127.0.0.1", "10.0.0.0/8"]
    assert s.source_roots == [Path("/srv/a"), Path("/srv/b")]
    assert s.ingest_sources == ["s3://b/in/", "/srv/drop"]
    monkeypatch.setenv("SHOTLINE_SOURCE_ALLOW_HOSTS", "127.0.0.1")  # the fetch error's advice
    assert Settings(_env_file=None).source_allow_hosts == ["127.0.0.1"]  # type: ignore[call-arg]
    monkeypatch.setenv("SHOTLINE_SOURCE_ALLOW_HOSTS", '["127.0.0.1"')
    with pytest.raises(SettingsInvalid, match=r"^SHOTLINE_SOURCE_ALLOW_HOSTS: not a JSON list"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SHOTLINE_BATCH_SIZE", "four"),
        ("SHOTLINE_BATCH_SIZES", "sdxl=4"),
        ("SHOTLINE_SOURCE_ROOTS", "[nope"),
        ("SHOTLINE_BLOB_BACKEND", "ftp"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable_exit_2(
    tmp_path: Path, var: str, value: str
) -> None:
    res = _shotline({"SHOTLINE_VAR_DIR": str(tmp_path), var: value}, "status")
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and var in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("error: bad setting:")


# --- storage --------------------------------------------------------------------------------


def test_missing_bucket_is_a_permanent_storage_error(moto_server: str) -> None:
    store = S3BlobStore(f"absent-{uuid.uuid4().hex[:8]}", endpoint_url=moto_server)
    with pytest.raises(PermanentStorageError, match="does not exist"):
        store.put("a/b.txt", b"x")
    with pytest.raises(PermanentStorageError, match="does not exist"):
        store.check_bucket()
    unreachable = S3BlobStore("b", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError) as info:
        unreachable.check_bucket()
    assert info.value.transient  # a dead endpoint may come back: still worth a retry


def test_probe_store_writes_reads_and_leaves_nothing(moto_server: str) -> None:
    bucket = make_bucket(moto_server)
    probe_store(S3BlobStore(bucket, endpoint_url=moto_server), "t1")
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def _sources_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate.upgrade(url)
    (tmp_path / "mug.png").write_bytes(PNG)
    (tmp_path / "shop.csv").write_text(
        "Handle,Title,Variant SKU,Image Src,Image Position\n"
        "mug,Mug,M-1,mug.png,1\n"
        "mug,,,missing.png,2\n"
    )
    return {
        "SHOTLINE_DATABASE_URL": url,
        "SHOTLINE_VAR_DIR": str(tmp_path / "var"),
        "SHOTLINE_BRANDS_DIR": str(ROOT / "samples" / "brands"),
        "SHOTLINE_SOURCE_ROOTS": str(tmp_path),
        "COLUMNS": "200",
        **extra,
    }


def test_sources_fetch_exit_codes_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_server: str
) -> None:
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    env = _sources_env(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["import", str(tmp_path / "shop.csv"), "--brand", "acme"], env=env)
    assert res.exit_code == 0, res.output
    # A bucket that does not exist: said at once, exit 2, nothing left pending silently.
    s3 = {
        **env,
        "SHOTLINE_BLOB_BACKEND": "s3",
        "SHOTLINE_S3_ENDPOINT_URL": moto_server,
        "SHOTLINE_S3_BUCKET": f"absent-{uuid.uuid4().hex[:8]}",
    }
    res = runner.invoke(app, ["sources", "fetch", "--brand", "acme"], env=s3)
    assert res.exit_code == 2, res.output
    assert "does not exist" in res.stderr and "Traceback" not in res.output
    # One good image, one missing: exit 1 and a summary in words, not a Python dict.
    res = runner.invoke(app, ["sources", "fetch", "--brand", "acme"], env=env)
    assert res.exit_code == 1, res.output
    assert "2 source image(s) sent in this process" in res.stdout
    assert "1 fetched, 1 failed" in res.stdout and "{" not in res.stdout
    assert "failed: file://" in res.stdout
    assert "missing.png: source image: file not found" in res.stdout


def test_fetch_task_fails_the_row_on_a_missing_bucket(
    tmp_settings: Settings, tmp_path: Path, moto_server: str
) -> None:
    """The worker's side: no bucket is the row's error at once (not 8 silent retries)."""
    from catalog.importing.importer import import_catalog
    from catalog.models import SourceImage
    from pipeline.brand.loader import find_brand
    from tasks.context import context_for
    from tasks.sources.fetching import fetch_sources

    (tmp_path / "mug.png").write_bytes(PNG)
    csv = tmp_path / "shop.csv"
    csv.write_text("Handle,Title,Variant SKU,Image Src\nmug,Mug,M-1,mug.png\n")
    settings = tmp_settings.model_copy(
        update={
            "source_roots": [tmp_path],
            "blob_backend": "s3",
            "s3_endpoint_url": moto_server,
            "s3_bucket": f"absent-{uuid.uuid4().hex[:8]}",
        }
    )
    migrate.upgrade(settings.database_url)
    ctx = context_for(settings)
    import_catalog(ctx.sessions, csv, find_brand(settings.brands_dir, "acme"))
    with ctx.sessions.begin() as s:
        ids = [r.id for r in s.query(SourceImage)]
    report = fetch_sources(ctx, ids)
    assert list(report.failed) == ids
    with ctx.sessions.begin() as s:
        row = s.get(SourceImage, ids[0])
        assert row is not None and row.status == "failed"
        assert "does not exist" in (row.error or "") and "mug.png" in (row.error or "")


# --- verify, worker, help -------------------------------------------------------------------


def test_verify_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    res = _shotline({"SHOTLINE_VAR_DIR": str(tmp_path)}, "verify", str(fifo))
    assert res.returncode == 2 and "not a regular file" in res.stderr, res.stderr


def test_verify_reads_an_s3_uri_unmangled(tmp_path: Path, moto_server: str) -> None:
    bucket = make_bucket(moto_server)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key="finals/shot-1.png", Body=PNG)
    env = {
        "SHOTLINE_VAR_DIR": str(tmp_path),
        "SHOTLINE_S3_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    res = _shotline(env, "verify", f"s3://{bucket}/finals/shot-1.png", "--json")
    assert res.returncode == 1, res.stderr  # read and checked: no watermark in this PNG
    assert json.loads(res.stdout)["verified"] is False
    res = _shotline(env, "verify", f"s3://{bucket}/finals/none.png")
    assert res.returncode == 2 and f"s3://{bucket}/finals/none.png" in res.stderr


def test_worker_has_events_and_a_unique_node_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOTLINE_BROKER_URL", "redis://127.0.0.1:6379/11")
    out = CliRunner().invoke(app, ["worker", "--gpu", "tiny", "--dry-run"]).stdout.split()
    assert "-E" in out
    name = out[out.index("-n") + 1]
    assert name == f"gpu-tiny-{os.getpid()}@%h"
    out = CliRunner().invoke(app, ["worker", "--cpu", "--dry-run"]).stdout.split()
    assert out[out.index("-n") + 1].startswith("cpu+ingest-") and "-E" in out


@pytest.mark.parametrize(
    "args", [["run", "--help"], ["review", "list", "--help"], ["reproduce", "--help"]]
)
def test_help_shows_no_storage_sized_ranges(args: list[str]) -> None:
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "4611686018427387904" not in res.stdout and "9223372036854775807" not in res.stdout


# --- logs and progress ----------------------------------------------------------------------


def test_a_log_line_prints_above_a_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's log handler writes through the bar's console (rich redirects stderr while a
    bar is live); a handler bound to the start-up stderr would write through the bar."""
    from tasks.cli.app import _configure_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    _configure_logging(Settings(_env_file=None, log_level="WARNING"))  # type: ignore[call-arg]
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with Progress(console=console, redirect_stderr=True) as bar:
        bar.add_task("work", total=3)
        logging.getLogger("tasks.test").warning("a line from the worker code")
    assert "WARNING tasks.test: a line from the worker code" in screen.getvalue()
