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
