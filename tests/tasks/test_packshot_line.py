"""Packshot shots through the line in-process (stand-in generator and gate): fetched, cut out,
placed, generated, composited; a bad source fails its shot with the URL, the rest go on."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.lineage import lineage_for
from catalog.models import Shot
from catalog.packshots.source_lineage import outputs_of_source
from catalog.packshots.sources import ensure_source_images
from pipeline.settings import Settings
from pipeline.types import Gate
from tasks.cli import app
from tasks.context import context_for, reset_contexts
from tasks.fakes import PassThroughGate
from tasks.runner import run_line
from tests.conftest import ROOT
from tests.factories import make_brand, make_product, make_shot
from tests.tasks.conftest import cli_env

PACKSHOTS = ROOT / "samples" / "packshots"


def test_packshot_shots_in_process(tmp_settings: Settings, tmp_path: Path) -> None:
    settings = tmp_settings.model_copy(
        update={
            "source_roots": [ROOT / "samples"],
            "generator_factory": "tasks.fakes:fixed_image_generator",
            "gate_factory": "tasks.fakes:pass_through_gate",
            "store_raw": True,  # the test reads the raw image back
        }
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    mug, ball = (PACKSHOTS / "mug.png").as_uri(), (PACKSHOTS / "ball.png").as_uri()
    missing = (PACKSHOTS / "nope.png").as_uri()
    place = {"scale": 0.6, "shadow": "contact", "anchor": "bottom"}
    with ctx.sessions.begin() as s:
        ids = ensure_source_images(s, [mug, ball, missing])
        brand = make_brand(s, name="acme")
        rev = make_product(s, brand, "MUG")
        shots = [
            make_shot(
                s, rev, template=f"pk{i}", source_image_id=ids[url], packshot={"placement": place}
            )
            for i, url in enumerate([mug, ball, missing, mug])
        ]
        text = make_shot(s, rev, template="hero_white")
        shot_ids = [sh.id for sh in shots] + [text.id]
    summary = run_line(settings, progress=False)
    assert summary.counts == {"pending_review": 4, "failed": 1}, summary.failures
    with ctx.sessions.begin() as s:
        rows = {sh.id: sh for sh in s.scalars(select(Shot).where(Shot.id.in_(shot_ids)))}
        bad = rows[shots[2].id]
        assert bad.state == "failed" and bad.error.startswith(f"source image {missing}: ")
        for sh in (shots[0], shots[1], shots[3]):
            row = rows[sh.id]
            cut, placed = row.packshot["cutout"], row.packshot["placed"]
            raw = np.asarray(Image.open(io.BytesIO(ctx.store.get(row.generation.blob_key))))
            canvas = np.asarray(Image.open(io.BytesIO(ctx.store.get(placed["image_key"]))))
            alpha = np.asarray(Image.open(io.BytesIO(ctx.store.get(placed["alpha_key"]))))
            core = alpha == 255
            assert core.any() and np.array_equal(raw[core], canvas[core])
            assert row.packshot["fidelity"]["exact"]["ok"]
            assert cut["method"] == ("alpha" if sh is shots[1] else "flood_grabcut")
        assert rows[text.id].packshot == {} and rows[text.id].state == "pending_review"
        scores = {sc["name"]: sc for sc in rows[shots[0].id].filter_result.scores}
        assert (
            scores["product_psnr_db"]["score"] >= 40 and not scores["product_psnr_db"]["triggered"]
        )
        chain = lineage_for(s, f"shot:{shots[0].id}")["chains"][0]
        assert chain["packshot"]["source_image"]["url"] == mug
        assert chain["packshot"]["cutout"]["mask_sha256"]
        made = outputs_of_source(s, chain["packshot"]["source_image"]["sha256"])
        assert sorted(r["shot_id"] for r in made["shots"]) == [shots[0].id, shots[3].id]


class _TamperingGate(PassThroughGate):
    """Finalizes with the image inverted, ignoring the pixels it was asked to keep: as if a
    watermark had wrecked the product."""

    def finalize(self, shot_id, image, provenance, fmt=None, keep=None):  # type: ignore[no-untyped-def]
        return super().finalize(shot_id, ImageOps.invert(image.convert("RGB")), provenance, fmt)


def tampering_gate(settings: Settings) -> Gate:
    return _TamperingGate()


def test_fidelity_rejects_a_damaged_product(tmp_settings: Settings) -> None:
    settings = tmp_settings.model_copy(
        update={
            "source_roots": [ROOT / "samples"],
            "generator_factory": "tasks.fakes:fixed_image_generator",
            "gate_factory": "tests.tasks.test_packshot_line:tampering_gate",
        }
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    mug = (PACKSHOTS / "mug.png").as_uri()
    with ctx.sessions.begin() as s:
        sid = ensure_source_images(s, [mug])[mug]
        rev = make_product(s, make_brand(s, name="acme"), "MUG")
        shot_id = make_shot(s, rev, template="pk", source_image_id=sid, packshot={}).id
        text_id = make_shot(s, rev, template="hero_white").id
    summary = run_line(settings, progress=False)
    assert summary.counts == {"rejected": 1, "pending_review": 1}
    with ctx.sessions.begin() as s:
        row = s.get(Shot, shot_id)
        assert row is not None and row.filter_result is not None
        reasons = row.filter_result.reasons
        assert any(r.startswith("product fidelity: PSNR inside the product is") for r in reasons)
        scores = {sc["name"]: sc for sc in row.filter_result.scores}
        assert scores["product_psnr_db"]["triggered"] and scores["product_psnr_db"]["score"] < 40
        assert not scores["product_pixels_changed"]["triggered"]  # the raw image was intact
        text = s.get(Shot, text_id)
        assert text is not None and text.filter_result is not None
        assert not any(sc["kind"] == "fidelity" for sc in text.filter_result.scores)


def test_packshot_with_the_tiny_inpainting_pipeline(tmp_settings: Settings) -> None:
    """The real path on the CPU: the tiny preset (random weights: the scene is noise), two
    packshot shots in one inpainting batch, each with its own image and mask."""
    settings = tmp_settings.model_copy(
        update={
            "source_roots": [ROOT / "samples"],
            "gate_factory": "tasks.fakes:pass_through_gate",
            "store_raw": True,  # the test reads the raw image back
        }
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    urls = [(PACKSHOTS / n).as_uri() for n in ("mug.png", "ball.png")]
    with ctx.sessions.begin() as s:
        ids = ensure_source_images(s, urls)
        rev = make_product(s, make_brand(s, name="acme"), "MUG")
        shot_ids = [
            make_shot(s, rev, template=f"pk{i}", source_image_id=ids[u], packshot={}).id
            for i, u in enumerate(urls)
        ]
    summary = run_line(settings, progress=False)
    assert summary.counts == {"pending_review": 2}, summary.failures
    with ctx.sessions.begin() as s:
        for sid in shot_ids:
            row = s.get(Shot, sid)
            assert row is not None and row.generation is not None
            placed = row.packshot["placed"]
            raw = np.asarray(Image.open(io.BytesIO(ctx.store.get(row.generation.blob_key))))
            canvas = np.asarray(Image.open(io.BytesIO(ctx.store.get(placed["image_key"]))))
            alpha = np.asarray(Image.open(io.BytesIO(ctx.store.get(placed["alpha_key"]))))
            core = alpha == 255
            assert np.array_equal(raw[core], canvas[core])
            assert not np.array_equal(raw[alpha == 0], canvas[alpha == 0])  # a generated scene
            assert row.generation.batch_id is not None
    # reproduce: the same bytes on the CPU from the stored source blob, in its batch and alone
    env = cli_env(settings)
    for args in ([str(shot_ids[1])], [str(shot_ids[0]), "--alone"]):
        res = CliRunner().invoke(app, ["reproduce", *args, "--json"], env=env)
        assert res.exit_code == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["match"] is True
