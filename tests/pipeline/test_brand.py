"""Brand config validation: every problem named by field path (and YAML line)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from pipeline.brand.config import BUILTIN_PRESETS, BrandConfig, BrandConfigError
from pipeline.brand.loader import brand_warnings, find_brand, load_brand
from pipeline.generate.schedulers import SCHEDULERS

ROOT = Path(__file__).resolve().parents[2]
ACME = ROOT / "samples" / "brands" / "acme.yaml"
PIN = "ab" * 32

MINIMAL = """\
name: demo
templates:
  hero:
    preset: tiny_fast
    prompt: "photo of {{ product.title }}"
"""


def _write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _problems(path: Path) -> list[str]:
    with pytest.raises(BrandConfigError) as info:
        load_brand(path)
    return info.value.lines()


def test_sample_brand_is_valid_and_complete() -> None:
    cfg = load_brand(ACME)
    assert cfg.name == "acme"
    assert {"hero_white", "lifestyle_kitchen", "flat_lay"} <= set(cfg.templates)
    hero = cfg.resolve_template("hero_white")
    # 256 px: the smallest size the invisible watermark can carry; few steps keep the demo quick.
    assert (hero.width, hero.height) == (256, 256) and hero.steps <= 8
    assert {c.name for c in cfg.competitors} >= {"Nike"}
    assert find_brand(ACME.parent, "acme").digest() == cfg.digest()


def test_minimal_brand_and_digest_follows_content(tmp_path: Path) -> None:
    a = load_brand(_write(tmp_path, MINIMAL))
    b = load_brand(_write(tmp_path, MINIMAL + "# a comment changes nothing\n", "b.yaml"))
    c = load_brand(_write(tmp_path, MINIMAL.replace("photo of", "image of"), "c.yaml"))
    assert a.digest() == b.digest() != c.digest()


def test_missing_field_is_named(tmp_path: Path) -> None:
    lines = _problems(_write(tmp_path, MINIMAL.replace("name: demo\n", "")))
    assert lines == [f"{tmp_path / 'demo.yaml'}: name: Field required"]
    text = "name: demo\ntemplates:\n  hero:\n    negative_prompt: x\n"
    lines = _problems(_write(tmp_path, text))
    assert lines == [f"{tmp_path / 'demo.yaml'}:3: templates.hero.prompt: Field required"]


def test_unknown_template_variable_is_named_with_its_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("product.title", "prodcut.title")
    [line] = _problems(_write(tmp_path, text))
    assert line.endswith(
        ":5: templates.hero.prompt: unknown template variable 'prodcut' "
        "(known: brand, lora, product, variant)"
    )


def test_unknown_fields_of_known_variables(tmp_path: Path) -> None:
    for expr, expected in [
        ("product.titel", "product has no field 'titel'"),
        ("variant.Size", "variant has no option 'Size'"),
        ("lora.nope", "no LoRA named 'nope'"),
    ]:
        [line] = _problems(_write(tmp_path, MINIMAL.replace("product.title", expr)))
        assert "templates.hero.prompt: " + expected in line, line


@pytest.mark.parametrize(
    "path", ["style.ckpt", "style.bin", "style.pt", "s3://bucket/style.pth", "style"]
)
def test_lora_must_be_safetensors(tmp_path: Path, path: str) -> None:
    text = MINIMAL + f"loras:\n  - name: style\n    path: {path}\n    sha256: {PIN}\n"
    [line] = _problems(_write(tmp_path, text))
    assert ":8: loras[0].path: LoRA weights must be a .safetensors file" in line


def test_lora_pin_must_be_a_sha256(tmp_path: Path) -> None:
    for pin in ("abc", "1" * 64):  # the second one YAML reads as an integer
        text = MINIMAL + f"loras:\n  - {{name: style, path: s.safetensors, sha256: {pin}}}\n"
        [line] = _problems(_write(tmp_path, text))
        assert "loras[0].sha256: must be the 64 hex digit sha256" in line


def test_lora_uri_and_relative_path_resolution(tmp_path: Path) -> None:
    text = MINIMAL + (
        "loras:\n"
        f"  - {{name: a, path: ../loras/a.safetensors, sha256: {PIN.upper()}, weight: 0.7}}\n"
        f"  - {{name: b, path: 'file:///srv/b.safetensors', sha256: {PIN}, trigger_word: bee}}\n"
    )
    (tmp_path / "brands").mkdir()
    cfg = load_brand(_write(tmp_path / "brands", text))
    a, b = cfg.adapters_for("hero")
    assert a.uri == str((tmp_path / "loras" / "a.safetensors").resolve())
    assert (a.sha256, a.weight, a.trigger_word) == (PIN, 0.7, None)
    # A URI stays as written (s3:// and http:// are refused: LoRAs load from local files).
    assert (b.uri, b.trigger_word) == ("file:///srv/b.safetensors", "bee")


def test_cross_field_problems_are_all_reported(tmp_path: Path) -> None:
    text = """\
name: demo
loras:
  - {name: style, path: s.safetensors, sha256: PIN}
  - {name: style, path: t.safetensors, sha256: PIN}
templates:
  hero:
    preset: nope
    prompt: "{{ product.nope }}"
  side:
    prompt: "y"
    loras: {ghost: 0.5}
visual_options: [Color, color]
""".replace("PIN", PIN)
    lines = _problems(_write(tmp_path, text))
    body = "\n".join(lines)
    assert "loras[1].name: duplicate LoRA name 'style'" in body
    assert ":7: templates.hero.preset: unknown preset 'nope'" in body
    assert ":8: templates.hero.prompt: product has no field 'nope'" in body
    assert "templates.side.loras.ghost: unknown LoRA 'ghost'" in body
    assert "visual_options[1]: duplicate option 'color'" in body


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    scheduler: warp\n", "templates.hero.scheduler: unknown scheduler 'warp'"),
        ("    width: 100\n", "templates.hero.width: Input should be a multiple of 8"),
        ("    steps: 0\n", "templates.hero.steps: Input should be greater than or equal to 1"),
        ("    promt: typo\n", "templates.hero.promt: Extra inputs are not permitted"),
    ],
)
def test_field_checks(tmp_path: Path, extra: str, expected: str) -> None:
    [line] = _problems(_write(tmp_path, MINIMAL + extra))
    assert expected in line


def test_pickle_base_model_is_refused(tmp_path: Path) -> None:
    [line] = _problems(_write(tmp_path, MINIMAL + "base_model: ./model.ckpt\n"))
    assert "base_model: './model.ckpt' is a pickle format" in line


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    [line] = _problems(_write(tmp_path, "name: demo\ntemplates: [unclosed\n"))
    assert line.startswith(f"{tmp_path / 'demo.yaml'}:3: invalid YAML")


def test_template_syntax_error(tmp_path: Path) -> None:
    [line] = _problems(_write(tmp_path, MINIMAL.replace("}}", "")))
    assert "templates.hero.prompt: syntax error" in line


def test_presets_resolve_with_template_overrides_and_digest(tmp_path: Path) -> None:
    text = MINIMAL.replace("preset: tiny_fast", "preset: sdxl\n    steps: 12")
    cfg = load_brand(_write(tmp_path, text))
    t = cfg.resolve_template("hero")
    sdxl = BUILTIN_PRESETS["sdxl"]
    assert (t.width, t.height, t.steps, t.guidance, t.scheduler) == (
        sdxl.width,
        sdxl.height,
        12,
        sdxl.guidance,
        sdxl.scheduler,
    )
    # A brand preset of the same name overrides the built-in one, and the digest follows.
    text2 = text + "presets:\n  sdxl: {width: 768, height: 768}\n"
    cfg2 = load_brand(_write(tmp_path, text2, "b.yaml"))
    assert cfg2.resolve_template("hero").width == 768
    assert cfg2.template_digest("hero") != cfg.template_digest("hero")


def _safetensors(data: bytes) -> bytes:
    """A well-formed safetensors file holding ``data`` as one uint8 tensor."""
    header = json.dumps(
        {"w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}
    )
    return len(header).to_bytes(8, "little") + header.encode() + data


def test_pin_problems_hash_local_files(tmp_path: Path) -> None:
    weights = _safetensors(b"weights")
    (tmp_path / "s.safetensors").write_bytes(weights)
    good = hashlib.sha256(weights).hexdigest()
    for pin, n in ((good, 0), (PIN, 1)):
        cfg = load_brand(
            _write(
                tmp_path, MINIMAL + f"loras:\n  - {{name: s, path: s.safetensors, sha256: {pin}}}\n"
            )
        )
        problems = cfg.pin_problems()
        assert len(problems) == n
    assert problems[0][0] == ("loras", 0, "sha256") and "pin mismatch" in problems[0][1]


def test_find_brand_unknown(tmp_path: Path) -> None:
    with pytest.raises(BrandConfigError, match="no brand config named 'nope'"):
        find_brand(tmp_path, "nope")
    with pytest.raises(BrandConfigError, match="invalid brand name"):
        find_brand(tmp_path, "../etc/passwd")


def test_round_trip_through_json(tmp_path: Path) -> None:
    cfg = load_brand(ACME)
    again = BrandConfig.model_validate(yaml.safe_load(yaml.safe_dump(cfg.to_json())))
    assert again.digest() == cfg.digest()


def test_scheduler_names_are_ones_the_generator_knows(tmp_path: Path) -> None:
    # One table (pipeline.generate.schedulers) feeds both the brand check and the generator:
    # every name in it validates, and a name outside it is refused.
    for name in SCHEDULERS:
        text = MINIMAL + f"    scheduler: {name}\n"
        assert load_brand(_write(tmp_path, text)).templates["hero"].scheduler == name
    with pytest.raises(BrandConfigError, match="unknown scheduler"):
        load_brand(_write(tmp_path, MINIMAL + "    scheduler: not_a_scheduler\n"))


def test_warnings_for_missing_files_and_mismatched_name(tmp_path: Path) -> None:
    text = MINIMAL + f"loras:\n  - {{name: s, path: gone.safetensors, sha256: {PIN}}}\n"
    cfg = load_brand(_write(tmp_path, text, "other.yaml"))
    assert brand_warnings(cfg) == [
        f"loras[0].path: file not found: {(tmp_path / 'gone.safetensors').resolve()}",
        "name: 'demo' differs from the file name 'other.yaml', so --brand demo will not find it",
    ]
    assert brand_warnings(load_brand(ACME)) == []
