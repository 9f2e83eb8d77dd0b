"""Packshot templates in the brand config: source, image choice, placement, inpaint_model."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import load_brand

PACKSHOT = """\
name: demo
inpaint_model: tiny-inpaint
templates:
  hero:
    preset: tiny_fast
    prompt: "photo of {{ product.title }}"
  on_white:
    preset: tiny_fast
    source: packshot
    image: first
    placement: {scale: 0.7, anchor: bottom, floor_margin: 0.1, shadow: contact}
    prompt: "{{ product.title }} on a seamless white background"
  in_scene:
    preset: tiny_fast
    source: packshot
    image: 2
    prompt: "{{ product.title }} on a kitchen counter"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "demo.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(BrandConfigError) as info:
        load_brand(_write(tmp_path, text))
    return info.value.lines()


def test_packshot_templates_resolve(tmp_path: Path) -> None:
    cfg = load_brand(_write(tmp_path, PACKSHOT))
    assert cfg.resolved_inpaint_model() == "tiny-inpaint"
    hero, white, scene = (cfg.resolve_template(n) for n in ("hero", "on_white", "in_scene"))
    assert not hero.is_packshot and hero.placement is None and hero.placement_spec() is None
    assert white.is_packshot and white.image == "first"
    spec = white.placement_spec()
    assert spec is not None
    assert (spec.scale, spec.anchor, spec.shadow) == (0.7, "bottom", "contact")
    assert spec.floor_margin == 0.1
    # No placement block: the defaults, recorded in the template definition.
    assert scene.image == 2 and scene.placement is not None
    assert scene.placement["anchor"] == "center"
    assert white.definition()["source"] == "packshot" and "source" not in hero.definition()
    assert white.digest() != scene.digest()


def test_text_template_digest_is_unchanged_by_packshot_fields(tmp_path: Path) -> None:
    with_packshots = load_brand(_write(tmp_path, PACKSHOT))
    hero_only = PACKSHOT.split("  on_white:")[0].replace("inpaint_model: tiny-inpaint\n", "")
    plain = load_brand(_write(tmp_path, hero_only))
    assert plain.template_digest("hero") == with_packshots.template_digest("hero")
    assert "inpaint_model" not in plain.to_json()
    assert "source" not in plain.to_json()["templates"]["hero"]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (("image: first", "image: last"), "templates.on_white.image", "variant"),
        (("image: 2", "image: 0"), "templates.in_scene.image", "image position"),
        (("scale: 0.7", "scale: 1.5"), "templates.on_white.placement.scale", "less than or equal"),
        (("anchor: bottom", "anchor: top"), "templates.on_white.placement.anchor", "center"),
        (("shadow: contact", "shadow: hard"), "templates.on_white.placement.shadow", "drop"),
        (
            ("source: packshot\n    image: first", "source: photo\n    image: first"),
            "templates.on_white.source",
            "text",
        ),
        (
            ("shadow: contact}", "shadow: contact, blur: 3}"),
            "templates.on_white.placement.blur",
            "Extra inputs",
        ),
        (("inpaint_model: tiny-inpaint", "inpaint_model: inpaint.ckpt"), "inpaint_model", "pickle"),
    ],
)
def test_bad_packshot_fields_are_named_with_their_line(
    tmp_path: Path, edit: tuple[str, str], field: str, message: str
) -> None:
    lines = _problems(tmp_path, PACKSHOT.replace(*edit))
    hit = [ln for ln in lines if f": {field}: " in ln]
    assert hit, lines
    assert message in hit[0]
    assert hit[0].split(":")[1].isdigit()  # file:line: field: message


def test_packshot_fields_on_a_text_template_are_refused(tmp_path: Path) -> None:
    text = PACKSHOT.replace("    source: packshot\n    image: first\n", "    image: first\n")
    lines = _problems(tmp_path, text)
    assert any("templates.on_white.image: only for packshot templates" in ln for ln in lines), lines
    assert any("templates.on_white.placement: only for packshot" in ln for ln in lines), lines
