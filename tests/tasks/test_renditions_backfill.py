"""``shotline renditions backfill``: assets published while their brand had no ``channels:``
get the channel files once the brand configures them, made from the published master as
publish makes them; the export then lists them and stops warning, a second run makes
nothing, and a rendition the image cannot meet (``max_bytes``) fails alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, AssetRendition
from catalog.shots import stored_brand_configs
from pipeline.settings import Settings
from pipeline.storage import make_blob_store
from tasks.cli import app
from tests.conftest import ROOT
from tests.tasks.test_delivery_export import _csv, _cycle, _env, line_settings

__all__ = ["line_settings"]  # the fixture: embedded, and Postgres + moto S3

EXTRA = """
  thumbs:
    renditions:
      - {name: capped, format: png, max_bytes: 1024}
      - {name: small, format: jpeg, quality: 80}
"""


def _brands(tmp_path: Path) -> tuple[Path, str]:
    """acme.yaml without its ``channels:`` in a brands folder of its own (the LoRA beside it,
    as in samples/); the full text to write back."""
    brands = tmp_path / "brands"
    brands.mkdir()
    (tmp_path / "loras").symlink_to(ROOT / "samples" / "loras")
    full = (ROOT / "samples" / "brands" / "acme.yaml").read_text()
    head, sep, _ = full.partition("\nchannels:")
    assert sep  # the sample configures channels; the test removes them
    (brands / "acme.yaml").write_text(head + "\n")
    return brands / "acme.yaml", full


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    """A CLI call that sees ``settings``, its brands folder included."""
    env = _env(settings) | {"SHOTLINE_BRANDS_DIR": str(settings.brands_dir)}
    res = CliRunner().invoke(app, list(args), env=env)
    return res.exit_code, res.output


def _rows(settings: Settings) -> tuple[list[Asset], list[AssetRendition]]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        assets = list(s.scalars(select(Asset)))
        rends = list(s.scalars(select(AssetRendition)))
        s.expunge_all()
    engine.dispose()
    return assets, rends


def _backfill(settings: Settings, *extra: str) -> tuple[int, dict[str, object]]:
    code, text = _cli(settings, "renditions", "backfill", "--brand", "acme", "--json", *extra)
    return code, json.loads(text)


def test_backfill_fills_channels_configured_after_publish(
    line_settings: Settings, tmp_path: Path
) -> None:
    yaml, full = _brands(tmp_path)
    settings = line_settings.model_copy(update={"brands_dir": yaml.parent})
    _cycle(settings, _csv(tmp_path / "c1.csv", "Mug"))
    assets, rends = _rows(settings)
    assert len(assets) == 6 and rends == []  # published with no channel: no renditions

    # The brand configures its channels: the export warns and names the fix.
    yaml.write_text(full)
    out = tmp_path / "shopify.csv"
    code, text = _cli(settings, "export", "shopify", "--brand", "acme", "--out", str(out))
    assert code == 0, text
    assert "6 current asset(s) have no shopify rendition" in text
    assert "shotline renditions backfill --brand acme" in text
    assert (pd.read_csv(out, dtype=str, keep_default_na=False)["Image Src"] != "").sum() == 0

    code, summary = _backfill(settings)
    assert code == 0, summary
    # (Postgres JSONB keeps the stored channels in its own key order.)
    wanted = sorted(summary["renditions_wanted"])  # type: ignore[call-overload]
    assert wanted == ["gmc/feed", "shopify/main", "social/portrait"]
    assert (summary["checked"], summary["assets"], summary["renditions"]) == (6, 6, 18)
    assert summary["failures"] == []

    # Stored and recorded as publish does: one row per (asset, channel, rendition), the
    # bytes in the store match the row, the watermark was re-read from every file.
    assets, rends = _rows(settings)
    store = make_blob_store(settings)
    by_asset: dict[int, set[tuple[str, str]]] = {a.id: set() for a in assets}
    for r in rends:
        by_asset[r.asset_id].add((r.channel, r.name))
        assert r.watermark_verified and r.xmp_ai_tag and r.icc_srgb, r.key
        assert hashlib.sha256(store.get(r.key)).hexdigest() == r.sha256
    want = {("shopify", "main"), ("gmc", "feed"), ("social", "portrait")}
    assert all(pairs == want for pairs in by_asset.values())
    # ``shotline verify`` reads the watermark back from a backfilled file.
    shop = next(r for r in rends if r.channel == "shopify")
    local = tmp_path / "rendition.jpg"
    local.write_bytes(store.get(shop.key))
    code, text = _cli(settings, "verify", str(local), "--json")
    assert code == 0, text
    report = json.loads(text)
    assert report["verified"] and report["shot_id"] == shop.shot_id
    assert (report["rendition"]["channel"], report["rendition"]["asset_id"]) == (
        "shopify",
        shop.asset_id,
    )

    # The export lists every current asset and no longer warns.
    code, text = _cli(settings, "export", "shopify", "--brand", "acme", "--out", str(out))
    assert code == 0, text
    assert "warning" not in text
    shop_csv = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert (shop_csv["Image Src"] != "").sum() == 6

    # A second run makes nothing.
    code, summary = _backfill(settings)
    assert code == 0, summary
    assert (summary["checked"], summary["assets"], summary["renditions"]) == (6, 0, 0)
    assert len(_rows(settings)[1]) == 18
    # The brand row holds the config with its channels: the next publications make them.
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        stored = stored_brand_configs(s, ["acme"])["acme"]
    engine.dispose()
    assert set(stored["channels"]) == {"shopify", "gmc", "social"}


def test_backfill_failures_and_bad_input(tmp_settings: Settings, tmp_path: Path) -> None:
    yaml, full = _brands(tmp_path)
    settings = tmp_settings.model_copy(update={"brands_dir": yaml.parent})
    migrate.upgrade(settings.database_url)
    _cycle(settings, _csv(tmp_path / "c1.csv", "Mug"))
    yaml.write_text(full + EXTRA)

    # A rendition no image can meet (a PNG under 1 KiB) fails on each asset with its reason;
    # the channel's other rendition is made for every asset all the same.
    code, summary = _backfill(settings, "--channel", "thumbs")
    assert code == 1, summary
    assert summary["renditions_wanted"] == ["thumbs/capped", "thumbs/small"]
    assert (summary["assets"], summary["renditions"]) == (6, 6)
    fails = summary["failures"]
    assert isinstance(fails, list) and len(fails) == 6
    assert all(f["rendition"] == "thumbs/capped" and "max_bytes" in f["reason"] for f in fails)
    rends = _rows(settings)[1]
    assert {(r.channel, r.name) for r in rends} == {("thumbs", "small")}

    # The plain summary names each failure on one line.
    code, text = _cli(settings, "renditions", "backfill", "--brand", "acme", "--channel", "thumbs")
    assert code == 1
    lines = text.strip().splitlines()
    assert sum("thumbs/capped" in ln and "max_bytes" in ln for ln in lines) == 6
    assert lines[-1] == "backfilled 0 asset(s) of 6 current: 0 rendition(s) made, 6 failure(s)"

    # Unknown brand or channel: one line, exit 2.
    for args, needle in (
        (["--brand", "nope"], "nope"),
        (["--brand", "acme", "--channel", "nope"], "no channels.nope"),
    ):
        code, text = _cli(settings, "renditions", "backfill", *args)
        assert code == 2, text
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], text
