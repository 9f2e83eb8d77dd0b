"""Slot rules as pure checks on drawn images, and their validation in the brand file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from pipeline.brand.config import BrandConfig, BrandConfigError, SlotRules
from pipeline.brand.loader import load_brand
from pipeline.gate.channel_rules import (
    check_aspect,
    check_long_side,
    check_rules,
    estimate_product,
    product_share,
)
from pipeline.gate.policy import with_checks
from pipeline.types import FilterDecision


def _scene(size: tuple[int, int] = (200, 200), bg: int = 255) -> np.ndarray:
    return np.full((*size, 3), bg, np.uint8)


def _with_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A red product in ``box`` (x0, y0, x1, y1), with a white label inside it."""
    out = image.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = (200, 30, 30)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    out[cy - 3 : cy + 3, cx - 3 : cx + 3] = 255
    return out


def _mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


BOX = (10, 20, 190, 190)  # 180 wide, 170 high in a 200x200 frame: share 0.9


def test_white_background_with_a_known_product() -> None:
    image = _with_box(_scene(), BOX)
    rules = SlotRules(white_background=True)
    scores, reasons = check_rules(image, rules, _mask((200, 200), BOX))
    assert reasons == [] and scores[0].name == "background_not_white"
    assert scores[0].score == 0.0 and not scores[0].triggered and scores[0].kind == "slot_rule"
    # One off-white pixel far from the product rejects it; the product itself may be anything.
    spotted = image.copy()
    spotted[2, 100] = (255, 255, 254)
    scores, reasons = check_rules(spotted, rules, _mask((200, 200), BOX))
    assert scores[0].triggered and scores[0].score == pytest.approx(1 / (200 * 200 - 184 * 174))
    assert len(reasons) == 1 and reasons[0].startswith("slot rule white_background: ")
    # ... unless the tolerance allows it; an off-white scene (250) fails even so.
    assert check_rules(spotted, SlotRules(white_background=True, white_tolerance=2), None)[1] == []
    grey = _with_box(_scene(bg=250), BOX)
    scores, reasons = check_rules(grey, rules, _mask((200, 200), BOX))
    assert scores[0].score == 1.0 and reasons


def test_blended_edge_next_to_the_product_is_not_background() -> None:
    image = _with_box(_scene(), BOX)
    x0, y0, x1, _y1 = BOX
    image[y0 - 2 : y0, x0:x1] = 240  # antialiasing/JPEG ringing in the 2-px guard band
    assert check_rules(image, SlotRules(white_background=True), _mask((200, 200), BOX))[1] == []
    image[y0 - 3, x0:x1] = 240  # three pixels out is background
    assert check_rules(image, SlotRules(white_background=True), _mask((200, 200), BOX))[1]


def test_white_background_estimated_for_text_shots() -> None:
    rules = SlotRules(white_background=True)
    # A product on white (even touching the bottom edge) passes.
    on_white = _with_box(_scene(), (40, 60, 160, 200))
    scores, reasons = check_rules(on_white, rules)
    assert scores[0].name == "edge_not_white" and not scores[0].triggered and reasons == []
    assert 0 < scores[0].score < 0.25  # the bottom edge is the product's
    # A scene (noise) is not a white background, though "non-white" would cover all of it.
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    scores, reasons = check_rules(noise, rules)
    assert scores[0].triggered and scores[0].score > 0.99
    assert reasons[0].startswith("slot rule white_background: ")
    assert check_rules(_scene(bg=252), rules)[1]  # off-white


def test_product_share_known_and_estimated() -> None:
    image = _with_box(_scene(), BOX)
    assert product_share(_mask((200, 200), BOX)) == pytest.approx(0.9)
    est = estimate_product(image)
    assert est[100, 100]  # the white label inside the product is the product (holes filled)
    assert product_share(est) == pytest.approx(0.9)
    scores, reasons = check_rules(image, SlotRules(min_product_share=0.85))
    assert scores[0].name == "product_share" and not scores[0].triggered and reasons == []
    small = (70, 70, 130, 130)
    scores, reasons = check_rules(
        image, SlotRules(min_product_share=0.85), _mask((200, 200), small)
    )
    assert scores[0].score == pytest.approx(0.3) and scores[0].threshold == 0.85
    assert reasons == [
        "slot rule min_product_share: the product fills 30.0% of the frame, below 85.0%"
    ]
    # A mask made at another size (an output scaled after placement) is scaled to the image.
    half = _mask((100, 100), (5, 10, 95, 95))
    assert check_rules(image, SlotRules(min_product_share=0.85), half)[0][0].score == 0.9


def test_long_side_and_aspect() -> None:
    assert check_long_side(1000, 800, 1000)[1] is None
    score, reason = check_long_side(999, 800, 1000)
    assert score.triggered and score.score == 999 and reason is not None
    assert check_aspect(1024, 1024, (1, 1))[1] is None
    assert check_aspect(1023, 1280, (4, 5))[1] is None  # one pixel of rounding
    score, reason = check_aspect(1000, 1010, (1, 1))
    assert score.triggered and reason == "slot rule aspect: the image is 1000x1010, not 1:1"
    scores, reasons = check_rules(_scene((64, 96)), SlotRules(min_long_side=100, aspect="1:1"))
    assert [s.name for s in scores] == ["long_side", "aspect"] and len(reasons) == 2


def test_rules_fold_into_the_decision() -> None:
    passed = FilterDecision("pending_review", [], [], "p", "clip")
    image = _with_box(_scene(), BOX)
    scores, reasons = check_rules(image, SlotRules(white_background=True, aspect="4:5"))
    out = with_checks(passed, scores, reasons)
    assert out.decision == "rejected" and out.reasons == reasons
    assert [s["name"] for s in out.scores] == ["edge_not_white", "aspect"]
    scores, reasons = check_rules(image, SlotRules(white_background=True, aspect="1:1"))
    assert with_checks(passed, scores, reasons).decision == "pending_review"


# --- the brand file ----------------------------------------------------------------------


def _brand(tmp_path: Path, template: dict[str, object]) -> Path:
    path = tmp_path / "acme.yaml"
    doc = {"name": "acme", "templates": {"main": {"prompt": "a mug", **template}}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_rules_validated_with_field_paths(tmp_path: Path) -> None:
    bad = {
        "rules": {
            "white_background": True,
            "min_product_share": 1.5,
            "min_long_side": True,
            "aspect": "square",
            "colour": "white",
        }
    }
    with pytest.raises(BrandConfigError) as err:
        load_brand(_brand(tmp_path, bad))
    lines = err.value.lines()
    fields = sorted(p.field for p in err.value.items)
    assert fields == [
        "templates.main.rules.aspect",
        "templates.main.rules.colour",
        "templates.main.rules.min_long_side",
        "templates.main.rules.min_product_share",
    ], lines
    assert all(line.startswith(f"{tmp_path / 'acme.yaml'}:") for line in lines)


def test_rules_no_shot_could_meet(tmp_path: Path) -> None:
    template = {
        "width": 512,
        "height": 512,
        "source": "packshot",
        "placement": {"scale": 0.6},
        "rules": {"min_long_side": 1000, "aspect": "4:5", "min_product_share": 0.85},
    }
    with pytest.raises(BrandConfigError) as err:
        load_brand(_brand(tmp_path, template))
    by_field = {p.field: p.message for p in err.value.items}
    assert by_field == {
        "templates.main.rules.min_long_side": (
            "min_long_side 1000 but the template makes 512x512 images"
        ),
        "templates.main.rules.aspect": "aspect 4:5 but the template makes 512x512",
        "templates.main.rules.min_product_share": (
            "min_product_share 0.85 but the placement (scale 0.6, margin 0.05) fills at most "
            "0.6 of the frame"
        ),
    }
    ok = {**template, "width": 1024, "height": 1024, "placement": {"scale": 0.9}}
    ok["rules"] = {"min_long_side": 1000, "aspect": "1:1", "min_product_share": 0.85}
    cfg = load_brand(_brand(tmp_path, ok))
    rules = cfg.templates["main"].rules
    assert rules is not None and rules.aspect_ratio() == (1, 1)


def test_rules_leave_other_digests_alone() -> None:
    plain = BrandConfig(name="acme", templates={"main": {"prompt": "a mug"}})  # type: ignore[dict-item]
    ruled = BrandConfig(
        name="acme",
        templates={"main": {"prompt": "a mug", "rules": {"white_background": True}}},  # type: ignore[dict-item]
    )
    assert "rules" not in plain.to_json()["templates"]["main"]  # digests of old brands hold
    assert ruled.digest() != plain.digest()  # a new rule is a new brand version
    assert ruled.template_digest("main") == plain.template_digest("main")  # same images
    with pytest.raises(ValidationError):
        SlotRules(white_tolerance=65)


def test_rules_beside_an_unknown_lora_are_reported_not_raised(tmp_path: Path) -> None:
    template = {"loras": {"nope": 1.0}, "rules": {"min_long_side": 4000}}
    with pytest.raises(BrandConfigError) as err:
        load_brand(_brand(tmp_path, template))
    fields = sorted(p.field for p in err.value.items)
    assert fields == ["templates.main.loras.nope", "templates.main.rules.min_long_side"]
