"""The fetch step end to end: catalog -> import -> ``shotline.fetch_sources`` -> blobs + rows.

Embedded (SQLite, local blobs, in-process Celery) and on the fleet parts (Postgres, a real
``celery worker`` on the ``cpu`` queue over Redis, moto's S3 over HTTP). Images come from a
loopback HTTP server the settings allow explicitly. Every failure ends its row ``failed``
with one line naming the URL; the rest of the batch is fetched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.importing.importer import import_catalog
from catalog.models import Brand, SourceImage
from pipeline.brand.loader import find_brand
from pipeline.digests import sha256_bytes
from pipeline.settings import Settings
from pipeline.storage import make_blob_store
from tasks.fetch import fetch_for_brand, source_key
from tests.conftest import ROOT
from tests.image_server import PNG, Handler, image_server
from tests.tasks.conftest import fleet_settings, make_bucket


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with image_server() as url:
        yield url


def _catalog(
    tmp_path: Path, server: str, extra: dict[str, str] | None = None
) -> tuple[Path, dict[str, str]]:
    """A generic CSV naming one image per product: the good ones and every failure kind."""
    root = tmp_path / "catalog"
    (root / "packshots").mkdir(parents=True)
    (root / "packshots" / "mug.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    port = server.rsplit(":", 1)[1]
    refs = {
        "ok": f"{server}/ok.png",
        "local": "packshots/mug.png",
        "hop": f"{server}/hop",
        "missing": f"{server}/missing.png",
        "slow": f"{server}/slow",
        "big": f"{server}/big",
        "page": f"{server}/page",
        "fake": f"{server}/fake.png",
        "bomb": f"{server}/bomb.png",
        "private": f"http://localhost:{port}/ok.png",
        "to_private": f"{server}/to-private",
        "outside": str(tmp_path / "secret.png"),
        "scheme": "javascript:alert(1)",
        **(extra or {}),
    }
    lines = ["Ref,Name,Photo", *(f"{k},Item {k},{v}" for k, v in refs.items())]
    path = root / "catalog.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, refs


REASONS = {
    "missing": "HTTP 404",
    "slow": "timed out",
    "big": "the limit is",
    "page": "is not image/*",
    "fake": "not a readable image",
    "bomb": "megapixels",
    "private": "non-public address",
    "to_private": "non-public address",
    "outside": "outside the allowed source roots",
    "scheme": "unsupported scheme",
}


def _settings(base: Settings, tmp_path: Path, **kw: object) -> Settings:
    return base.model_copy(
        update={
            "source_roots": [tmp_path / "catalog"],
            "source_allow_hosts": ["127.0.0.1"],
            "source_max_bytes": 16384,
            "source_max_pixels": 1_000_000,
            "source_read_timeout_s": 0.5,
            "source_total_timeout_s": 5.0,
            **kw,
        }
    )


def _run_and_check(
    settings: Settings, tmp_path: Path, server: str, extra: dict[str, str] | None = None
) -> None:
    path, refs = _catalog(tmp_path, server, extra)
    brand = find_brand(ROOT / "samples" / "brands", "acme").model_copy(
        update={
            "name": f"f-{uuid.uuid4().hex[:8]}",
            "column_map": {"sku": "Ref", "title": "Name", "image": "Photo"},
        }
    )
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    try:
        assert import_catalog(factory, path, brand, fmt="generic").status == "succeeded"
        with factory() as s:
            brand_id = s.scalars(select(Brand.id).where(Brand.name == brand.name)).one()
        ids = fetch_for_brand(settings, brand_id)
        assert len(ids) == len(refs)
        rows = _wait_done(factory, ids)
        by_raw = {_raw(r, refs, tmp_path): r for r in rows}
        store = make_blob_store(settings)
        good = ("ok", "local", "hop", *(extra or {}))
        for name in good:
            row = by_raw[name]
            assert row.status == "fetched", (name, row.error)
            assert row.sha256 == sha256_bytes(PNG) and (row.width, row.height) == (8, 6)
            assert row.blob_key == source_key(row.sha256) and store.get(row.blob_key) == PNG
            assert row.content_type == "image/png" and row.fetched_at is not None
        assert by_raw["ok"].etag == "v1"
        for name, reason in REASONS.items():
            row = by_raw[name]
            assert row.status == "failed", name
            assert row.error is not None and "\n" not in row.error
            assert row.url in row.error and reason in row.error, (name, row.error)
        # Again, re-checking fetched images: a 304 for the ETag, the same sha256 for files.
        before = Handler.hits.get("/ok.png", 0)
        again = fetch_for_brand(settings, brand_id, refresh=True)
        assert set(again) == {by_raw[n].id for n in good}
        after = {r.id: r for r in _wait_done(factory, again, since=by_raw["ok"].updated_at)}
        assert Handler.hits["/ok.png"] >= before + 1
        for name in good:
            old, new = by_raw[name], after[by_raw[name].id]
            assert (new.sha256, new.fetched_at, new.attempts) == (
                old.sha256,
                old.fetched_at,
                old.attempts + 1,
            )
    finally:
        engine.dispose()


def _raw(row: SourceImage, refs: dict[str, str], tmp_path: Path) -> str:
    for name, ref in refs.items():
        if row.url == ref or (row.url.startswith("file:") and row.url.endswith("/" + ref)):
            return name
    raise AssertionError(row.url)


def _wait_done(factory: object, ids: list[int], since: object = None) -> list[SourceImage]:
    deadline = time.monotonic() + 60
    while True:
        with factory() as s:  # type: ignore[operator]
            rows = list(s.scalars(select(SourceImage).where(SourceImage.id.in_(ids))))
        done = [
            r for r in rows if r.status != "pending" and (since is None or r.updated_at > since)
        ]
        if len(done) == len(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_fetch_embedded(tmp_settings: Settings, tmp_path: Path, server: str) -> None:
    settings = _settings(tmp_settings, tmp_path)
    migrate.upgrade(settings.database_url)
    _run_and_check(settings, tmp_path, server)


def test_fetch_on_a_cpu_worker(
    tmp_path: Path,
    pg_db: str,
    fleet_redis: str,
    moto_server: str,
    make_fleet: Any,
    server: str,
) -> None:
    """Postgres, a real worker on the cpu queue over Redis, S3 blobs and an s3:// source."""
    bucket = make_bucket(moto_server)
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").put_object(
        Bucket=bucket, Key="packshots/mug.png", Body=PNG, ContentType="image/png"
    )
    over = {
        "source_roots": [str(tmp_path / "catalog")],
        "source_allow_hosts": ["127.0.0.1"],
        "source_max_bytes": 16384,
        "source_max_pixels": 1_000_000,
        "source_read_timeout_s": 0.5,
        "source_total_timeout_s": 5.0,
        "source_s3_buckets": [bucket],  # s3:// sources only from allowed buckets (issue 31)
    }
    settings, env = fleet_settings(tmp_path, pg_db, fleet_redis, moto_server, bucket, **over)
    fleet = make_fleet(settings, env)
    fleet.start("cpu", queues="cpu", pool="solo")
    try:
        _run_and_check(settings, tmp_path, server, {"s3": f"s3://{bucket}/packshots/mug.png"})
    except AssertionError:
        print(fleet.log_tail())
        raise


def test_sources_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    """``shotline import`` then ``sources fetch`` / ``sources list``: failures are one line
    each, user text is printed as text, an unknown brand is one line and exit 2."""
    import json
    import os

    from typer.testing import CliRunner

    from tasks.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate.upgrade(url)
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    env = {
        "SHOTLINE_DATABASE_URL": url,
        "SHOTLINE_VAR_DIR": str(tmp_path / "var"),
        "SHOTLINE_BRANDS_DIR": str(ROOT / "samples" / "brands"),
        "SHOTLINE_SOURCE_ROOTS": json.dumps([str(tmp_path)]),
        "SHOTLINE_SOURCE_ALLOW_HOSTS": '["127.0.0.1"]',
        "COLUMNS": "200",
    }
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mug.png").write_bytes(PNG)
    csv = tmp_path / "shop.csv"
    csv.write_text(
        "Handle,Title,Variant SKU,Image Src,Image Position\n"
        "mug,Mug,M-1,mug.png,1\n"
        f"mug,,,{server}/missing.png?[red]x[/red],2\n"
    )
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        res = runner.invoke(app, list(args), env=env)
        return res.exit_code, res.stdout, res.stderr

    code, out, err = run("import", str(csv), "--brand", "acme")
    assert code == 0, out + err
    code, out, err = run("sources", "fetch", "--brand", "acme", "--json")
    assert code == 1, out + err  # one fetch failed: non-zero (issue 24)
    report = json.loads(out)
    assert report["sent"] == 2 and report["states"] == {"fetched": 1, "failed": 1}
    assert report["failed"] == [f"{server}/missing.png?[red]x[/red]: HTTP 404 Not Found"]
    code, out, err = run("sources", "list", "--brand", "acme", "--status", "failed")
    assert code == 0 and "?[red]x[/red]: HTTP 404" in out  # shown as text, not markup
    code, out, err = run("sources", "fetch", "--brand", "nobody")
    assert code == 2 and "brand 'nobody'" in err and "Traceback" not in err + out


def test_packshot_sources_for_the_gpu_step(
    tmp_settings: Settings, tmp_path: Path, server: str
) -> None:
    """Pending sources are fetched on the spot, each decoded once; failed ones give the
    fetch's one-line reason (naming the URL); a blob gone from the store is named too."""
    from catalog.packshots.sources import ensure_source_images
    from pipeline.failures import FailureKind
    from tasks.context import context_for
    from tasks.line.prepare import load_packshot_sources

    settings = _settings(tmp_settings, tmp_path)
    migrate.upgrade(settings.database_url)
    ctx = context_for(settings)
    urls = [f"{server}/ok.png", f"{server}/missing.png", f"{server}/other.png"]
    with ctx.sessions.begin() as s:
        ids = ensure_source_images(s, urls)
    wanted = {1: ids[urls[0]], 2: ids[urls[1]], 3: ids[urls[0]], 4: ids[urls[2]]}
    ready, errors = load_packshot_sources(ctx, wanted)
    assert set(ready) == {1, 3, 4} and ready[1] is ready[3]  # one decode per source
    assert ready[1].decoded.image.size == (8, 6) and ready[1].sha256 == sha256_bytes(PNG)
    assert {k: f.reason for k, f in errors.items()} == {
        2: f"source image {urls[1]}: HTTP 404 Not Found"
    }
    assert errors[2].kind == FailureKind.source_unavailable
    ctx.store.delete(source_key(ready[4].sha256))
    ready, errors = load_packshot_sources(ctx, {5: ids[urls[2]]})
    reason = errors[5].reason
    assert not ready and "is missing (fetch again)" in reason and urls[2] in reason
