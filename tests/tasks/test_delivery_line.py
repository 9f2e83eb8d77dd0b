"""Delivery on the embedded default with the real tiny models: publishing writes each
channel's renditions (JPEG, WebP, PNG), each carrying the shot's watermark, the XMP AI tag
and an sRGB profile, and ``shotline verify`` reads each one back to its shot."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, AssetRendition
from pipeline.brand.loader import find_brand
from pipeline.settings import Settings
from pipeline.storage import LocalBlobStore, sha256_bytes
from tasks.cli import app
from tasks.dispatch import enqueue_publish
from tasks.runner import run_line
from tests.factories import make_brand, make_product, make_shot
from tests.tasks.conftest import approve_all, cli_env


def seed_sized(settings: Settings, n: int, side: int = 256) -> list[int]:
    """``n`` planned acme shots at ``side`` px: big enough to carry the watermark."""
    cfg = find_brand(settings.brands_dir, "acme")
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        row = make_brand(s, name="acme", config=cfg.to_json(), config_digest=cfg.digest())
        ids = [
            make_shot(
                s, make_product(s, row, f"SKU-{i:05d}", title=f"Mug {i}"), width=side, height=side
            ).id
            for i in range(n)
        ]
    engine.dispose()
    return ids


def _published(settings: Settings) -> list[int]:
    migrate.upgrade(settings.database_url)
    ids = seed_sized(settings, 2)
    run_line(settings, brand="acme", progress=False)
    approve_all(settings, ids)
    enqueue_publish(ids, settings)
    return ids


def test_publish_writes_verified_renditions_per_channel(tmp_settings: Settings) -> None:
    _published(tmp_settings)
    store = LocalBlobStore(Path(tmp_settings.blob_root))
    engine = make_engine(tmp_settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        assets = list(s.scalars(select(Asset)))
        rends = list(s.scalars(select(AssetRendition)))
    engine.dispose()
    assert assets, "nothing was published"
    # acme's channels: shopify (JPEG), gmc (WebP), social (PNG, 4:5 crop).
    assert len(rends) == 3 * len(assets)
    by_asset = {a.id: a for a in assets}
    for r in rends:
        asset = by_asset[r.asset_id]
        assert r.shot_id == asset.shot_id
        data = store.get(r.key)
        assert sha256_bytes(data) == r.sha256 and len(data) == r.size_bytes
        # Next to the master, content-addressed.
        assert r.key.rsplit("/", 1)[0] == asset.key.rsplit("/", 1)[0]
        assert r.key.rsplit("/", 1)[1].startswith(r.sha256)
        assert r.watermark_verified and r.xmp_ai_tag and r.icc_srgb
    formats = {(r.channel, r.content_type) for r in rends}
    assert formats == {
        ("shopify", "image/jpeg"),
        ("gmc", "image/webp"),
        ("social", "image/png"),
    }
    social = [r for r in rends if r.channel == "social"]
    # 4:5 (to the pixel), cropped, and at least the watermark's 256x256 pixels.
    assert all(abs(r.width / r.height - 0.8) < 1 / r.height for r in social)
    assert all(r.width * r.height >= 256 * 256 for r in social)

    # Publishing again writes no second rendition row.
    enqueue_publish([a.shot_id for a in assets], tmp_settings)
    engine = make_engine(tmp_settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        assert len(list(s.scalars(select(AssetRendition)))) == len(rends)
    engine.dispose()


def test_verify_reads_jpeg_and_webp_renditions(tmp_settings: Settings) -> None:
    _published(tmp_settings)
    engine = make_engine(tmp_settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        rends = list(s.scalars(select(AssetRendition).order_by(AssetRendition.id)))
    engine.dispose()
    for ctype in ("image/jpeg", "image/webp"):
        r = next(x for x in rends if x.content_type == ctype)
        path = Path(tmp_settings.blob_root) / r.key
        out = CliRunner().invoke(app, ["verify", str(path), "--json"], env=cli_env(tmp_settings))
        assert out.exit_code == 0, out.output
        report = json.loads(out.stdout)
        assert report["verified"] and report["shot_id"] == r.shot_id
        assert report["ai_generated_tag"] is True
        assert report["rendition"]["channel"] == r.channel
        assert report["rendition"]["asset_id"] == r.asset_id
        assert report["recalled"] is None
