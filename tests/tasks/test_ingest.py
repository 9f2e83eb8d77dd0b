"""Scheduled ingestion from a local folder and an S3 prefix: each file once (by sha256),
bad files moved to failed/ and never retried, new shots planned and run."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import boto3
from sqlalchemy import func, select

from catalog import migrate
from catalog.models import ImportRun, Shot, SourceImage
from pipeline.settings import Settings
from tasks.celery_app import TASK_INGEST, app
from tasks.context import WorkerContext
from tasks.ingest import ingest_due
from tests.conftest import ROOT

SAMPLE = ROOT / "samples" / "catalog.csv"
BAD = "foo,bar\n1,2\n"


def _settled(path: Path) -> None:
    old = time.time() - 60
    os.utime(path, (old, old))


def _ctx(settings: Settings, **over: object) -> WorkerContext:
    s = settings.model_copy(
        update={
            "generator_factory": "tasks.fakes:fixed_image_generator",
            "gate_factory": "tasks.fakes:pass_through_gate",
            "ingest_brand": "acme",
            **over,
        }
    )
    migrate.upgrade(s.database_url)
    return WorkerContext.build(s)


def _shots_by_state(ctx: WorkerContext) -> dict[str, int]:
    with ctx.sessions.begin() as s:
        return dict(s.execute(select(Shot.state, func.count()).group_by(Shot.state)).all())


def _text_and_packshot_states(ctx: WorkerContext) -> tuple[dict[str, int], list[str]]:
    """Text-to-image shots by state, and the errors of packshot shots that failed (their
    catalog images are on cdn.example.com or relative to a folder the ingest copy left)."""
    with ctx.sessions.begin() as s:
        text = dict(
            s.execute(
                select(Shot.state, func.count())
                .where(Shot.source_image_id.is_(None))
                .group_by(Shot.state)
            ).all()
        )
        errors = list(
            s.scalars(
                select(Shot.error).where(Shot.source_image_id.is_not(None), Shot.state == "failed")
            )
        )
    return text, [e or "" for e in errors]


def test_beat_schedules_ingestion() -> None:
    entry = app.conf.beat_schedule["ingest-due-catalogs"]
    assert entry["task"] == TASK_INGEST
    assert entry["schedule"] == float(Settings(_env_file=None).ingest_interval_s)  # type: ignore[call-arg]
    assert app.conf.task_routes[TASK_INGEST] == {"queue": "ingest"}


def test_ingest_local_folder_once_per_file_and_failed_files_moved(
    tmp_settings: Settings, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(SAMPLE, incoming / "catalog-2026-11-23.csv")
    (incoming / "broken.csv").write_text(BAD)
    (incoming / "notes.md").write_text("not a catalog")
    for p in incoming.iterdir():
        _settled(p)
    ctx = _ctx(tmp_settings, ingest_sources=[str(incoming)])

    result = ingest_due(ctx)
    assert (result["imported"], result["failed"]) == (1, 1)
    ok = next(r for r in result["files"] if r["status"] == "imported")
    assert ok["shots_enqueued"] > 0
    # Planned and run in-process (embedded): every new shot went through generate -> gate.
    # Packshot shots whose source image can't be fetched here fail, each naming its image.
    text, packshot_errors = _text_and_packshot_states(ctx)
    assert set(text) == {"pending_review"}
    assert sum(_shots_by_state(ctx).values()) == ok["shots_enqueued"]
    assert all("source image" in e or "http" in e or "png" in e for e in packshot_errors), (
        packshot_errors
    )
    assert not (incoming / "broken.csv").exists()
    assert (incoming / "failed" / "broken.csv").exists()
    assert (incoming / "failed" / "broken.csv.error.txt").read_text().strip()

    # The next tick: nothing new. The same bytes under another name are not imported twice.
    shutil.copy(SAMPLE, incoming / "catalog-copy.csv")
    _settled(incoming / "catalog-copy.csv")
    again = ingest_due(ctx)
    assert again["imported"] == 0 and again["failed"] == 0
    assert {r["status"] for r in again["files"]} == {"skipped"}
    with ctx.sessions.begin() as s:
        runs = list(s.scalars(select(ImportRun)))
    assert sorted(r.status for r in runs) == ["failed", "succeeded"]
    assert all(r.file_sha256 for r in runs)
    ctx.close()


def test_ingest_s3_prefix(tmp_settings: Settings, moto_server: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"ingest-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="incoming/catalog.csv", Body=SAMPLE.read_bytes())
    s3.put_object(Bucket=bucket, Key="incoming/bad.csv", Body=BAD.encode())
    s3.put_object(Bucket=bucket, Key="elsewhere/other.csv", Body=BAD.encode())
    ctx = _ctx(
        tmp_settings, ingest_sources=[f"s3://{bucket}/incoming/"], s3_endpoint_url=moto_server
    )
    result = ingest_due(ctx)
    assert (result["imported"], result["failed"]) == (1, 1), result
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "incoming/bad.csv" not in keys
    assert {"incoming/failed/bad.csv", "incoming/failed/bad.csv.error.txt"} <= keys
    with ctx.sessions.begin() as s:
        uris = set(s.scalars(select(ImportRun.source_uri)))
        refs = set(s.scalars(select(SourceImage.url)))
    assert f"s3://{bucket}/incoming/catalog.csv" in uris
    # The sample's relative packshot paths resolve next to the catalog in the bucket, not
    # in the temp folder its copy was imported from.
    assert f"s3://{bucket}/incoming/packshots/mug.png" in refs
    assert not any(r.startswith("file://") for r in refs)
    assert ingest_due(ctx)["imported"] == 0  # imported once
    ctx.close()
