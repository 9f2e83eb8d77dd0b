"""Slot rules through the line in-process (stand-in generator and gate), on both finalize
paths: a template with ``white_background: true`` rejects a shot whose scene is not white and
passes one whose scene is."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from catalog import migrate
from catalog.models import Shot
from catalog.packshots.sources import ensure_source_images
from pipeline.settings import Settings
from pipeline.types import Generator
from tasks.cli import app
from tasks.context import context_for, reset_contexts
from tasks.fakes import FixedImageGenerator
from tasks.runner import run_line
from tests.conftest import ROOT
from tests.factories import make_brand, make_product, make_shot

MUG = (ROOT / "samples" / "packshots" / "mug.png").as_uri()
BRAND = {
    "name": "slotco",
    "base_model": "tiny",
    "templates": {
        "main_pk": {
            "prompt": "a mug on white",
            "source": "packshot",
            "rules": {"white_background": True, "min_product_share": 0.5},
        },
        "main_text": {"prompt": "a mug on white", "rules": {"white_background": True}},
        "lifestyle": {"prompt": "a mug in a kitchen"},  # no rules
    },
}


class _WhiteSceneGenerator(FixedImageGenerator):
    """The stand-in generator with a pure white scene (a studio main image)."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.image = Image.new("RGB", self.image.size, (255, 255, 255))
        self.png = None  # type: ignore[assignment]  # encoded from the image by the line
        self.sha256 = None  # type: ignore[assignment]


def white_scene_generator(settings: Settings, model_id: str) -> Generator:
    return _WhiteSceneGenerator(model_id)


@pytest.mark.parametrize("gate_on", ["gpu", "cpu"])
@pytest.mark.parametrize(
    ("generator", "white"),
    [
        ("tasks.fakes:fixed_image_generator", False),  # a noise scene
        ("tests.tasks.test_slot_rules_line:white_scene_generator", True),
    ],
)
def test_white_background_rule_on_the_line(
    tmp_settings: Settings, tmp_path: Path, gate_on: str, generator: str, white: bool
) -> None:
    brands = tmp_path / "brands"
    brands.mkdir()
    (brands / "slotco.yaml").write_text(yaml.safe_dump(BRAND), encoding="utf-8")
    settings = tmp_settings.model_copy(
        update={
            "brands_dir": brands,
            "source_roots": [ROOT / "samples"],
            "generator_factory": generator,
            "gate_factory": "tasks.fakes:pass_through_gate",
            "gate_on": gate_on,
        }
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    with ctx.sessions.begin() as s:
        source = ensure_source_images(s, [MUG])[MUG]
        rev = make_product(s, make_brand(s, name="slotco"), "MUG")
        place = {"placement": {"scale": 0.6, "shadow": "none"}}
        pk = make_shot(s, rev, template="main_pk", source_image_id=source, packshot=place).id
        text = make_shot(s, rev, template="main_text").id
        free = make_shot(s, rev, template="lifestyle").id
    summary = run_line(settings, progress=False)
    assert sum(summary.counts.values()) == 3, summary.failures
    with ctx.sessions.begin() as s:
        rows = {sid: s.get(Shot, sid) for sid in (pk, text, free)}
        results = {sid: row.filter_result for sid, row in rows.items() if row is not None}
        assert len(results) == 3 and all(r is not None for r in results.values())
        for sid in (pk, text):
            row, result = rows[sid], results[sid]
            assert row is not None and result is not None
            scores = {sc["name"]: sc for sc in result.scores if sc["kind"] == "slot_rule"}
            white_row = scores["background_not_white" if sid == pk else "edge_not_white"]
            assert white_row["triggered"] is (not white)
            rule_reasons = [r for r in result.reasons if r.startswith("slot rule ")]
            if white:
                assert row.state == "pending_review" and result.reasons == []
                assert white_row["score"] == 0.0
            else:
                assert row.state == "rejected"
                assert [r.split(":")[0] for r in rule_reasons] == ["slot rule white_background"]
                assert white_row["score"] > 0.5  # the noise scene is almost nowhere white
        pk_scores = {sc["name"]: sc for sc in results[pk].scores}
        share = pk_scores["product_share"]
        assert 0.5 <= share["score"] <= 0.65 and not share["triggered"]  # placed at scale 0.6
        assert not pk_scores["product_pixels_changed"]["triggered"]  # fidelity ran beside it
        lifestyle = rows[free]
        assert lifestyle is not None and lifestyle.state == "pending_review"
        assert not any(sc["kind"] == "slot_rule" for sc in results[free].scores)
    # The published bytes are what was judged: the white scene's final file is white outside.
    if white:
        with ctx.sessions.begin() as s:
            row = s.get(Shot, text)
            assert row is not None and row.watermark is not None
            key = row.watermark.image_key
        final = np.asarray(Image.open(io.BytesIO(ctx.store.get(key))).convert("RGB"))
        assert final.min() == 255


def test_brands_check_names_bad_rules(tmp_path: Path) -> None:
    bad = tmp_path / "slotco.yaml"
    doc = {
        "name": "slotco",
        "templates": {
            "main": {
                "prompt": "a mug",
                "width": 512,
                "height": 512,
                "rules": {"aspect": "4x5", "min_long_side": 2000},
            }
        },
    }
    bad.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = CliRunner().invoke(app, ["brands", "check", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # the size rule waits until the aspect is valid
    assert lines[0].startswith(f"error: {bad}:") and "templates.main.rules.aspect: " in lines[0]
    doc["templates"]["main"]["rules"]["aspect"] = "1:1"  # type: ignore[index]
    bad.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = CliRunner().invoke(app, ["brands", "check", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}:8: templates.main.rules.min_long_side: min_long_side 2000 but the "
        "template makes 512x512 images"
    ]


class _ProductOnWhiteGenerator(_WhiteSceneGenerator):
    """A 512 px studio shot: a textured product on pure white, big enough to carry a mark
    (``bare``: the white alone, which cannot)."""

    def __init__(self, model_id: str, bare: bool = False) -> None:
        super().__init__(model_id)
        rng = np.random.default_rng(11)
        arr = np.full((512, 512, 3), 255, np.uint8)
        if not bare:
            yy, xx = np.mgrid[:512, :512]
            disc = (yy - 256) ** 2 + (xx - 256) ** 2 < 150**2
            arr[disc] = rng.integers(60, 200, (int(disc.sum()), 3), dtype=np.uint8)
        self.image = Image.fromarray(arr, "RGB")


def product_on_white_generator(settings: Settings, model_id: str) -> Generator:
    return _ProductOnWhiteGenerator(model_id)


def bare_white_generator(settings: Settings, model_id: str) -> Generator:
    return _ProductOnWhiteGenerator(model_id, bare=True)


class _WatermarkingGate:
    """The stand-in gate's decisions with the real gate's finalize (watermark, XMP)."""

    def __init__(self, settings: Settings) -> None:
        from pipeline.gate.stage import load_gate
        from tasks.fakes import PassThroughGate
        from tests.pipeline.test_clip_filter import FakeEncoder

        self.stand_in = PassThroughGate()
        self.real = load_gate(settings, encoder=FakeEncoder())

    def __getattr__(self, name: str) -> object:
        return getattr(self.stand_in, name)

    def finalize(self, *args: object, **kw: object) -> object:
        return self.real.finalize(*args, **kw)  # type: ignore[arg-type]


def watermarking_gate(settings: Settings) -> object:
    return _WatermarkingGate(settings)


@pytest.mark.parametrize("gate_on", ["gpu", "cpu"])
@pytest.mark.parametrize("bare", [False, True])
def test_white_background_keeps_rgb_255_under_the_real_watermark(
    tmp_settings: Settings, tmp_path: Path, gate_on: str, bare: bool
) -> None:
    """white_tolerance 0 with the watermark on: the white stays RGB 255, the rule passes, and
    the mark lives in the product (verified) or, with no product to carry it, is omitted and
    recorded so (``watermarks.method``)."""
    from pipeline.gate import watermark as wm

    brands = tmp_path / "brands"
    brands.mkdir()
    (brands / "slotco.yaml").write_text(yaml.safe_dump(BRAND), encoding="utf-8")
    name = "bare_white_generator" if bare else "product_on_white_generator"
    settings = tmp_settings.model_copy(
        update={
            "brands_dir": brands,
            "generator_factory": f"tests.tasks.test_slot_rules_line:{name}",
            "gate_factory": "tests.tasks.test_slot_rules_line:watermarking_gate",
            "gate_on": gate_on,
        }
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    with ctx.sessions.begin() as s:
        rev = make_product(s, make_brand(s, name="slotco"), "MUG")
        main = make_shot(s, rev, template="main_text", width=512, height=512).id
        free = make_shot(s, rev, template="lifestyle", width=512, height=512).id
    summary = run_line(settings, progress=False)
    assert summary.counts == {"pending_review": 2}, summary.failures
    with ctx.sessions.begin() as s:
        rows = {sid: s.get(Shot, sid) for sid in (main, free)}
        marks = {
            sid: (r.watermark.method, r.watermark.verified, r.watermark.image_key)
            for sid, r in rows.items()
            if r is not None and r.watermark is not None
        }
    generated = np.asarray(_ProductOnWhiteGenerator("x", bare=bare).image)
    white = (generated == 255).all(axis=2)
    method, verified, key = marks[main]
    final = np.asarray(Image.open(io.BytesIO(ctx.store.get(key))).convert("RGB"))
    assert (final[white] == 255).all()  # the marketplace's RGB 255, exactly
    if bare:
        assert (method, verified) == (wm.OMITTED_WHITE, False)
    else:
        assert verified and method != wm.OMITTED_WHITE
        assert np.any(final[~white] != generated[~white])  # the mark is in the product
    # A template without the rule is marked as before: its white is lowered where the bits say.
    method, verified, key = marks[free]
    other = np.asarray(Image.open(io.BytesIO(ctx.store.get(key))).convert("RGB"))
    assert verified and method != wm.OMITTED_WHITE and (other[white] < 255).any()
