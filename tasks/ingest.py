"""Scheduled ingestion: new catalog files from a folder or an S3 prefix -> import -> plan -> run.

``settings.ingest_sources`` lists local folders and ``s3://bucket/prefix/`` URIs. Each file is
imported once, keyed by its sha256 (``import_runs.file_sha256``): the same bytes under a new
name are not imported again, and a changed file is. A file that fails to import is moved to
a ``failed/`` subfolder (prefix on S3) beside it and, being recorded, never retried.

The two ingest tasks (``shotline.import_catalog`` and the beat's
``shotline.ingest_due_catalogs``) are defined here, beside what they run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.importing.runs import run_of_file
from catalog.models import ImportRun, ImportStatus, utcnow
from catalog.status import planned_shots
from pipeline.brand.config import BrandConfigError
from pipeline.digests import sha256_file
from pipeline.s3 import s3_client
from pipeline.storage import s3_error
from tasks.celery_app import app
from tasks.context import WorkerContext
from tasks.dispatch import ShotlineTask, enqueue_generate
from tasks.queues import TASK_IMPORT, TASK_INGEST

log = logging.getLogger(__name__)

CATALOG_SUFFIXES = (".csv", ".tsv", ".txt")
FAILED_DIR = "failed"
# A local file modified this recently may still be being written: pick it up next time.
SETTLE_S = 2.0


@dataclass(frozen=True)
class SourceFile:
    uri: str  # file path or s3://bucket/key
    name: str


def _s3_client(ctx: WorkerContext) -> Any:
    return s3_client(ctx.settings.s3_endpoint_url, ctx.settings.s3_region)


@contextmanager
def _s3_errors(op: str, bucket: str, key: str) -> Iterator[None]:
    """botocore's errors as ours (``pipeline.storage.s3_error``): a transient one retries the
    task, a permanent one (no bucket, access denied) says so once."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise s3_error(exc, op, bucket, key) from exc


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def list_source(ctx: WorkerContext, source: str) -> list[SourceFile]:
    """Catalog files directly under ``source`` (not in ``failed/``), oldest name first."""
    if source.startswith("s3://"):
        bucket, prefix = _split_s3(source)
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        client = _s3_client(ctx)
        out = []
        with _s3_errors("list", bucket, prefix):
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            ):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    if name.lower().endswith(CATALOG_SUFFIXES):
                        out.append(SourceFile(f"s3://{bucket}/{obj['Key']}", name))
        return sorted(out, key=lambda f: f.name)
    folder = Path(source)
    if not folder.is_dir():
        log.warning("ingest source %s is not a folder; skipped", source)
        return []
    now = time.time()
    return [
        SourceFile(str(p), p.name)
        for p in sorted(folder.iterdir())
        if p.is_file()
        and p.suffix.lower() in CATALOG_SUFFIXES
        and now - p.stat().st_mtime >= SETTLE_S
    ]


def _fetch(ctx: WorkerContext, src: SourceFile, tmp: Path) -> Path:
    if not src.uri.startswith("s3://"):
        return Path(src.uri)
    bucket, key = _split_s3(src.uri)
    local = tmp / Path(key).name
    with _s3_errors("get", bucket, key):
        _s3_client(ctx).download_file(bucket, key, str(local))
    return local


def _mark_failed(ctx: WorkerContext, src: SourceFile, reason: str) -> str:
    """Move the file into ``failed/`` beside it, with the reason next to it."""
    if src.uri.startswith("s3://"):
        bucket, key = _split_s3(src.uri)
        parent, _, name = key.rpartition("/")
        dest = f"{parent + '/' if parent else ''}{FAILED_DIR}/{name}"
        client = _s3_client(ctx)
        with _s3_errors("move", bucket, key):
            client.copy_object(Bucket=bucket, Key=dest, CopySource={"Bucket": bucket, "Key": key})
            client.put_object(Bucket=bucket, Key=dest + ".error.txt", Body=reason.encode())
            client.delete_object(Bucket=bucket, Key=key)
        return f"s3://{bucket}/{dest}"
    path = Path(src.uri)
    failed = path.parent / FAILED_DIR
    failed.mkdir(exist_ok=True)
    target = failed / path.name
    shutil.move(str(path), target)
    (failed / (path.name + ".error.txt")).write_text(reason + "\n", encoding="utf-8")
    return str(target)


def _record(ctx: WorkerContext, run_id: int | None, src: SourceFile, sha: str, error: str) -> None:
    """Remember the file by sha256 even when the importer could not get far enough to."""
    with ctx.sessions.begin() as s:
        run = s.get(ImportRun, run_id) if run_id is not None else None
        if run is None:
            run = ImportRun(source_uri=src.uri, status=ImportStatus.failed.value)
            s.add(run)
        run.source_uri = src.uri
        run.file_sha256 = sha
        if error:
            run.status = ImportStatus.failed.value
            run.error = run.error or error[:4000]
            run.finished_at = run.finished_at or utcnow()


def ingest_source_file(ctx: WorkerContext, uri: str, brand: str | None = None) -> dict[str, Any]:
    """Import one file (if its sha256 is new), plan its brand, enqueue the planned shots."""
    from catalog.importing.importer import import_catalog
    from catalog.planning import PlanningError, plan_shots

    settings = ctx.settings
    src = SourceFile(uri, uri.rsplit("/", 1)[-1])
    with tempfile.TemporaryDirectory(prefix="shotline-ingest-") as tmp:
        path = _fetch(ctx, src, Path(tmp))
        sha = sha256_file(path)
        with ctx.sessions.begin() as s:
            seen = run_of_file(s, sha)
        if seen is not None:
            return {"file": uri, "status": "skipped", "reason": f"already seen as run {seen}"}
        name = brand or settings.ingest_brand
        try:
            if not name:
                raise BrandConfigError(uri, ["no brand: set SHOTLINE_INGEST_BRAND"])
            cfg = ctx.brand_config(name)
            summary = import_catalog(ctx.sessions, path, cfg, source_uri=uri)
        except (ValueError, OSError) as exc:  # CatalogFileError, BrandConfigError, unreadable
            run_id = getattr(getattr(exc, "summary", None), "run_id", None)
            reason = str(exc)
            _record(ctx, run_id, src, sha, reason)
            moved = _mark_failed(ctx, src, reason)
            log.warning("ingest %s failed (moved to %s): %s", uri, moved, reason)
            return {"file": uri, "status": "failed", "error": reason, "moved_to": moved}
        _record(ctx, summary.run_id, src, sha, "")
    try:
        with ctx.sessions.begin() as s:
            plan = plan_shots(s, cfg, settings)
            # Every planned shot of the brand, by state rather than a huge IN list of ids:
            # generation claims by state, so a shot enqueued twice is still made once.
            planned = planned_shots(s, cfg.name)
    except PlanningError as exc:
        return {"file": uri, "status": "imported", "run_id": summary.run_id, "error": str(exc)}
    enqueue_generate(planned, settings)
    return {
        "file": uri,
        "status": "imported",
        "run_id": summary.run_id,
        "revisions_new": summary.revisions_new,
        "shots_created": plan.created,
        "shots_enqueued": len(planned),
    }


def ingest_due(
    ctx: WorkerContext, sources: list[str] | None = None, brand: str | None = None
) -> dict[str, Any]:
    """Every configured source: import the files not seen yet. One bad file never stops the rest.

    ``sources`` and ``brand`` come with beat's tick (its settings, where the documentation
    says to set them); without them the worker's own settings apply.
    """
    results: list[dict[str, Any]] = []
    for source in ctx.settings.ingest_sources if sources is None else sources:
        try:
            files = list_source(ctx, source)
        except Exception as exc:  # an unreachable source must not hide the others
            results.append({"source": source, "status": "error", "error": str(exc)})
            continue
        for src in files:
            try:
                results.append(ingest_source_file(ctx, src.uri, brand))
            except Exception as exc:
                log.exception("ingest of %s failed", src.uri)
                results.append({"file": src.uri, "status": "error", "error": str(exc)})
    return {
        "files": results,
        "imported": sum(r.get("status") == "imported" for r in results),
        "failed": sum(r.get("status") == "failed" for r in results),
    }


@app.task(name=TASK_IMPORT, base=ShotlineTask, bind=True)
def import_catalog_task(
    self: ShotlineTask, source: str, brand: str | None = None
) -> dict[str, Any]:
    return ingest_source_file(self.context, source, brand)


@app.task(name=TASK_INGEST, base=ShotlineTask, bind=True)
def ingest_due_catalogs(
    self: ShotlineTask, sources: list[str] | None = None, brand: str | None = None
) -> dict[str, Any]:
    return ingest_due(self.context, sources, brand)
