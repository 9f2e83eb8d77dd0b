"""Issue 31 on brand files: non-finite and out-of-range numbers are refused with the field
path and line; deep nesting is one line, not a RecursionError."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import MAX_BRAND_DEPTH, load_brand

BASE = """\
name: demo
templates:
  hero:
    preset: tiny_fast
    prompt: "photo of {{ product.title }}"
"""


def _lines(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BrandConfigError) as info:
        load_brand(path)
    return info.value.lines()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e309", "-5", "true", "1.5"])
def test_concept_threshold_must_be_finite_and_in_range(tmp_path: Path, value: str) -> None:
    text = BASE + (
        f"safety:\n  concepts:\n    - {{name: nsfw, prompt: nudity, threshold: {value}}}\n"
    )
    lines = _lines(tmp_path, text)
    assert len(lines) == 1 and "safety.concepts[0].threshold" in lines[0], lines
    assert "demo.yaml:8: " in lines[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("competitor_threshold", ".nan"),
        ("logo_threshold", "1e309"),
        ("product_match_min", "-5"),
        ("logo_threshold", "false"),
    ],
)
def test_policy_thresholds_refused(tmp_path: Path, field: str, value: str) -> None:
    lines = _lines(tmp_path, BASE + f"safety:\n  {field}: {value}\n")
    assert any(f"safety.{field}" in line for line in lines), lines


@pytest.mark.parametrize(
    ("snippet", "path"),
    [
        ("    guidance: .nan\n", "templates.hero.guidance"),
        ("    guidance: true\n", "templates.hero.guidance"),
        ("    loras: {style: .inf}\n", "templates.hero.loras"),
        ("    loras: {style: true}\n", "templates.hero.loras"),
        ("    image: 100000000000000000000000\n", "templates.hero.image"),
        ("    steps: true\n", "templates.hero.steps"),
    ],
)
def test_template_numbers_refused(tmp_path: Path, snippet: str, path: str) -> None:
    lines = _lines(tmp_path, BASE + snippet)
    assert any(line.startswith(f"{path}") or f" {path}" in line for line in lines), lines


def test_seed_and_lora_weight_bounds(tmp_path: Path) -> None:
    text = BASE + "lora_validation:\n  - {prompt: mug, seed: 100000000000000000000000}\n"
    assert any("lora_validation[0].seed" in line for line in _lines(tmp_path, text))


def test_valid_numbers_still_load(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(
        BASE
        + "safety:\n  logo_threshold: 0.9\n  concepts:\n"
        + "    - {name: nsfw, prompt: nudity, threshold: 0.28}\n",
        encoding="utf-8",
    )
    cfg = load_brand(path)
    assert cfg.safety.concepts[0].threshold == 0.28 and cfg.safety.logo_threshold == 0.9


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_one_line(tmp_path: Path, opener: str) -> None:
    if opener == "- ":
        text = "".join("  " * i + "-\n" for i in range(600))
    else:
        text = "x: " + opener * 40_000
    lines = _lines(tmp_path, text)
    assert len(lines) == 1 and "nested more than" in lines[0] and "demo.yaml:" in lines[0], lines


def test_nesting_through_aliases_is_bounded(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_BRAND_DEPTH + 8)]
    lines = _lines(tmp_path, "\n".join(levels) + "\n")
    assert len(lines) == 1 and "nested more than" in lines[0], lines
