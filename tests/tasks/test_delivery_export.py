"""The weekly loop with the real tiny models, on the embedded default (SQLite, local folder)
and on Postgres + moto's S3 server over HTTP: import -> plan -> run -> approve -> publish ->
``export shopify`` and ``export gmc``; the files parse with pandas, list one image per current
asset, and every URL names an object that exists in the blob store the line wrote to. A
re-import with a changed title supersedes the old asset; a recalled asset leaves the next
export."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.importing.importer import import_catalog
from catalog.models import Asset, AssetRendition, Shot
from catalog.planning import plan_shots
from catalog.review import Reviewer, approve
from pipeline.brand.loader import find_brand
from pipeline.delivery.urls import key_of
from pipeline.settings import Settings
from pipeline.storage import BlobStore, make_blob_store
from tasks.cli import app
from tasks.dispatch import enqueue_publish
from tasks.runner import run_line
from tests.tasks.conftest import cli_env, make_bucket

BASE = "https://cdn.example.com/shop images/"  # a space: URLs must encode it
HEADER = "Handle,Title,Body (HTML),Vendor,Type,Tags,Option1 Name,Option1 Value,Variant SKU\n"


@pytest.fixture(params=["embedded", "postgres_s3"])
def line_settings(request: pytest.FixtureRequest, tmp_settings: Settings) -> Settings:
    """The embedded default, or the same line on a fresh Postgres database and a moto bucket."""
    if request.param == "embedded":
        migrate.upgrade(tmp_settings.database_url)
        return tmp_settings
    moto: str = request.getfixturevalue("moto_server")
    return tmp_settings.model_copy(
        update={
            "database_url": request.getfixturevalue("pg_db"),  # migrated by the fixture
            "blob_backend": "s3",
            "s3_endpoint_url": moto,
            "s3_bucket": make_bucket(moto),
        }
    )


def _env(settings: Settings) -> dict[str, str]:
    """What a CLI call needs to see ``settings`` (the S3 ones where the line uses S3)."""
    env = {**cli_env(settings), "SHOTLINE_PUBLIC_BASE_URL": BASE}
    if settings.blob_backend == "s3":
        env |= {
            "SHOTLINE_BLOB_BACKEND": "s3",
            "SHOTLINE_S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
            "SHOTLINE_S3_BUCKET": str(settings.s3_bucket),
        }
    return env


def _csv(path: Path, mug_title: str) -> Path:
    path.write_text(
        HEADER
        + f'mug,"{mug_title}",<p>Stoneware</p>,ACME,Mugs,kitchen,Color,Red,MUG-RED\n'
        + "mug,,,,,,,Blue,MUG-BLUE\n"
        + 'bowl,"Bowl, large",<p>Bowl</p>,ACME,Bowls,kitchen,Title,Default,BOWL-1\n'
    )
    return path


def _cycle(settings: Settings, csv: Path) -> None:
    """import -> plan (two text templates) -> run -> approve everything -> publish."""
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    brand = find_brand(settings.brands_dir, "acme")
    import_catalog(factory, csv, brand)
    with factory.begin() as s:
        plan_shots(s, brand, settings, templates=["hero_white", "lifestyle_kitchen"])
    run_line(settings, brand="acme", progress=False)
    with factory.begin() as s:
        who = Reviewer("demo", "test")
        for status, override in (("pending_review", False), ("rejected", True)):
            ids = list(s.scalars(select(Shot.id).where(Shot.state == status)))
            if ids:
                approve(s, ids, who, override=override)
        approved = list(s.scalars(select(Shot.id).where(Shot.state == "approved")))
    enqueue_publish(approved, settings)
    engine.dispose()


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), env=_env(settings))
    if res.exit_code == 1 and res.exc_info:
        import traceback

        traceback.print_exception(*res.exc_info)
    return res.exit_code, res.output


def _exports(settings: Settings, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    for args in (
        ("export", "shopify", "--brand", "acme", "--out", str(out / "shopify.csv")),
        ("export", "gmc", "--brand", "acme", "--out", str(out / "gmc.tsv")),
        ("export", "gmc", "--brand", "acme", "--out", str(out / "gmc.xml")),
    ):
        code, text = _cli(settings, *args)
        assert code == 0, text
    shop = pd.read_csv(out / "shopify.csv", dtype=str, keep_default_na=False)
    gmc = pd.read_csv(out / "gmc.tsv", sep="\t", dtype=str, keep_default_na=False)
    return shop, gmc, (out / "gmc.xml").read_text()


def _published(settings: Settings) -> dict[int, Asset]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        out = {a.shot_id: a for a in s.scalars(select(Asset))}
    engine.dispose()
    return out


def _rendition(settings: Settings, key: str) -> AssetRendition:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        found = s.scalars(select(AssetRendition).where(AssetRendition.key == key)).one()
    engine.dispose()
    return found


def _rendition_keys(settings: Settings, asset_id: int) -> list[str]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        keys = s.scalars(select(AssetRendition.key).where(AssetRendition.asset_id == asset_id))
        out = list(keys)
    engine.dispose()
    return out


def _states(settings: Settings) -> list[tuple[object, ...]]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as s:
        rows = s.execute(
            select(Shot.id, Shot.state, Shot.error, Shot.variant_key).where(
                Shot.state != "published"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def _exists(store: BlobStore, url: str, ext: str) -> bool:
    key = key_of(BASE.replace(" ", "%20"), url)
    return key is not None and key.endswith(ext) and store.exists(key)


def test_weekly_loop_exports(line_settings: Settings, tmp_path: Path) -> None:
    tmp_settings = line_settings
    _cycle(tmp_settings, _csv(tmp_path / "c1.csv", "Mug"))
    first = _published(tmp_settings)
    assert len(first) == 6  # (mug red, mug blue, bowl) x (hero_white, lifestyle_kitchen)
    shop, gmc, xml = _exports(tmp_settings, tmp_path)

    images = shop[shop["Image Src"] != ""]
    assert len(images) == 6  # one image row per current asset
    assert not images.duplicated(["Handle", "Image Position"]).any()
    assert set(images["Handle"]) == {"mug", "bowl"}
    assert all(images["Image Alt Text"].str.contains("ACME Home"))
    # The blob store the line published to: a local folder, or the moto bucket over HTTP.
    store = make_blob_store(tmp_settings)
    assert store.backend == tmp_settings.blob_backend
    for url in images["Image Src"]:
        assert " " not in url and "," not in url.removeprefix("https://")
        assert _exists(store, url, ".jpg"), url  # the shopify channel's JPEG rendition
    # Merchant Center: keyed by the variant SKUs; no image_link (no main slot for gmc).
    assert set(gmc["id"]) == {"MUG-RED", "MUG-BLUE", "BOWL-1"}
    assert (gmc["image_link"] == "").all()
    assert (gmc["additional_image_link"] != "").all() and (gmc["lifestyle_image_link"] != "").all()
    for url in list(gmc["additional_image_link"]) + list(gmc["lifestyle_image_link"]):
        assert _exists(store, url, ".webp"), url
    assert xml.count("<item>") == 3 and "<g:id>MUG-RED</g:id>" in xml

    # A changed title: a new revision, re-planned, approved and published; the old mug
    # assets are superseded and leave the export.
    _cycle(tmp_settings, _csv(tmp_path / "c2.csv", "Mug, glazed"))
    second = _published(tmp_settings)
    assert len(second) == 10, _states(tmp_settings)
    shop2, _, _ = _exports(tmp_settings, tmp_path)
    img2 = shop2[shop2["Image Src"] != ""]
    assert len(img2) == 6
    assert not img2.duplicated(["Handle", "Image Position"]).any()
    assert all(_exists(store, url, ".jpg") for url in img2["Image Src"])
    assert not set(img2["Image Src"]) & set(images[images["Handle"] == "mug"]["Image Src"])
    assert set(img2[img2["Handle"] == "bowl"]["Image Src"]) == set(
        images[images["Handle"] == "bowl"]["Image Src"]
    )
    # The first cycle's mug assets stay in the catalog, listed as superseded.
    old_mug = {sid for sid, a in first.items() if a.key.startswith("acme/MUG-")}
    assert len(old_mug) == 4
    code, text = _cli(tmp_settings, "review", "list", "--status", "superseded", "--json")
    assert code == 0, text
    assert {r["id"] for r in json.loads(text)} == old_mug

    # Recall one bowl asset: it leaves the next export, and lineage says who and why.
    recalled = next(a for a in second.values() if a.key.startswith("acme/BOWL-1/hero_white"))
    code, text = _cli(tmp_settings, "recall", str(recalled.id), "--reason", "wrong colour")
    assert code == 0, text
    shop3, _, _ = _exports(tmp_settings, tmp_path)
    assert len(shop3[shop3["Image Src"] != ""]) == 5
    code, text = _cli(tmp_settings, "lineage", f"asset:{recalled.id}", "--json")
    assert code == 0, text
    delivery = json.loads(text)["chains"][0]["delivery"]
    assert delivery["status"] == "recalled" and delivery["recall"]["reason"] == "wrong colour"

    # Lineage from a feed URL (a rendition's key under the base, percent-encoded) and from
    # the bare rendition key: the shot that made it, with its full chain.
    url = shop3[shop3["Image Src"] != ""]["Image Src"].iloc[0]
    key = key_of(BASE.replace(" ", "%20"), url)
    rend = _rendition(tmp_settings, str(key))
    for ref in (url, str(key)):
        code, text = _cli(tmp_settings, "lineage", ref, "--json")
        assert code == 0, text
        chain = json.loads(text)["chains"]
        assert [c["shot_id"] for c in chain] == [rend.shot_id], ref
        assert chain[0]["prompt"] and chain[0]["delivery"]["status"] == "current"
        assert key in {r["key"] for r in chain[0]["delivery"]["renditions"]}

    # --delete-objects: the recalled asset's master and every rendition leave the store;
    # the other assets' objects stay.
    doomed = _published(tmp_settings)[rend.shot_id]
    keys = [doomed.key, *_rendition_keys(tmp_settings, doomed.id)]
    assert len(keys) == 4 and all(store.exists(k) for k in keys)  # master + 3 channels
    code, text = _cli(
        tmp_settings, "recall", str(doomed.id), "--reason", "bad", "--delete-objects", "--json"
    )
    assert code == 0, text
    assert json.loads(text)["delete_failed"] == []
    assert not any(store.exists(k) for k in keys)
    others = [a for a in _published(tmp_settings).values() if a.id != doomed.id]
    assert others and all(store.exists(a.key) for a in others)
    code, text = _cli(tmp_settings, "lineage", f"asset:{doomed.id}", "--json")
    assert json.loads(text)["chains"][0]["delivery"]["recall"]["objects"] == "deleted"

    # The review export carries the handle, variant, asset status and public URL.
    code, text = _cli(tmp_settings, "review", "export", "--out", str(tmp_path / "review.csv"))
    assert code == 0, text
    review = pd.read_csv(tmp_path / "review.csv", dtype=str, keep_default_na=False)
    by_shot = review.set_index("shot_id")
    assert by_shot.loc[str(recalled.shot_id), "asset_status"] == "recalled"
    assert by_shot.loc[str(doomed.shot_id), "asset_status"] == "recalled"
    assert {by_shot.loc[str(sid), "asset_status"] for sid in old_mug} == {"superseded"}
    current = review[review["asset_status"] == "current"]
    assert len(current) == 4 and set(current["handle"]) <= {"mug", "bowl"}
    mug = review[(review["handle"] == "mug") & (review["asset_status"] != "superseded")]
    assert set(mug["variant_options"]) == {"Color=Red", "Color=Blue"}
    assert all(
        u.startswith("https://cdn.example.com/shop%20images/acme/") for u in current["public_url"]
    )


def test_export_refuses_bad_input_with_one_line(tmp_settings: Settings, tmp_path: Path) -> None:
    migrate.upgrade(tmp_settings.database_url)
    out = tmp_path / "feed.csv"
    out.write_text("previous\n")
    env = cli_env(tmp_settings)
    runner = CliRunner()
    cases = [
        ({}, ["export", "shopify", "--brand", "acme", "--out", str(out)], "PUBLIC_BASE_URL"),
        (
            {"SHOTLINE_PUBLIC_BASE_URL": "cdn.example.com/x"},
            ["export", "shopify", "--brand", "acme", "--out", str(out)],
            "scheme",
        ),
        (
            {"SHOTLINE_PUBLIC_BASE_URL": BASE},
            ["export", "shopify", "--brand", "acme", "--out", str(tmp_path)],
            "is a folder",
        ),
        (
            {"SHOTLINE_PUBLIC_BASE_URL": BASE},
            ["export", "gmc", "--brand", "acme", "--out", str(tmp_path / "feed.json")],
            ".tsv",
        ),
        (
            {"SHOTLINE_PUBLIC_BASE_URL": BASE},
            ["export", "shopify", "--brand", "acme", "--channel", "nope", "--out", str(out)],
            "no channels.nope",
        ),
    ]
    fifo = tmp_path / "fifo.csv"
    import os

    os.mkfifo(fifo)
    cases.append(
        (
            {"SHOTLINE_PUBLIC_BASE_URL": BASE},
            ["export", "shopify", "--brand", "acme", "--out", str(fifo)],
            "is a FIFO",
        )
    )
    for extra, args, needle in cases:
        res = runner.invoke(app, args, env={**env, **extra})
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], (args, res.output)
    assert out.read_text() == "previous\n"  # nothing half-written
