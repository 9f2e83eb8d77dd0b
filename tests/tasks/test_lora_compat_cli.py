"""``brands check`` looks inside each LoRA before any GPU time: the adapters brands bring in
the shapes that used to pass with exit 0 and fail every shot at run are refused with one line
naming the file and the reason (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.digests import sha256_file
from tasks.cli import app
from tests import lora_files

BRAND = """\
name: demo
loras:
  - {{name: style, path: loras/style.safetensors, sha256: "{sha}"{extra}}}
templates:
  hero: {{prompt: 'photo of {{{{ product.title }}}}'}}
"""


def _brand(tmp_path: Path, lora: Path | None, extra: str = "") -> Path:
    sha = sha256_file(lora) if lora is not None and lora.is_file() else "0a" * 32
    brand = tmp_path / "demo.yaml"
    brand.write_text(BRAND.format(sha=sha, extra=extra), encoding="utf-8")
    return brand


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lora_files.sdxl_kohya, "kohya LoRA made for sdxl, the model is sd15: family mismatch"),
        (lora_files.no_match, "no LoRA tensor matches a module of the model"),
        (lora_files.wrong_prefix, "first key 'base_model.model.down_blocks"),
        (lora_files.half_matching, "only 32 of 64 LoRA tensors match the model"),
        (lora_files.wrong_shape, "1 of 64 LoRA tensors do not fit the model's shapes"),
        (lora_files.loha, "LyCORIS LoHa adapters are not supported"),
        (lora_files.lokr, "LyCORIS LoKr adapters are not supported"),
    ],
)
def test_refused_with_one_line_naming_the_file(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    lora = make(tmp_path / "loras" / "style.safetensors")
    code, _, err = run("brands", "check", str(_brand(tmp_path, lora)))
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {tmp_path / 'demo.yaml'}:3: loras[0].path: {lora}: ")
    assert reason in lines[0]


def test_missing_file_is_an_error_not_a_warning(tmp_path: Path) -> None:
    brand = _brand(tmp_path, None)
    code, _, err = run("brands", "check", str(brand))
    assert code == 2
    assert err.strip() == (
        f"error: {brand}:3: loras[0].path: {tmp_path / 'loras' / 'style.safetensors'}: "
        "LoRA file not found"
    )


def test_partial_match_allowed_when_the_brand_says_so(tmp_path: Path) -> None:
    lora = lora_files.half_matching(tmp_path / "loras" / "style.safetensors")
    code, out, err = run("brands", "check", str(_brand(tmp_path, lora, ", allow_partial: true")))
    assert code == 0, err
    assert "LoRA style: peft, family unknown, 32/64 tensors matched" in out


def test_each_format_is_named(tmp_path: Path) -> None:
    lora = tmp_path / "loras" / "style.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(lora_files.SAMPLE.read_bytes())
    code, out, err = run("brands", "check", str(_brand(tmp_path, lora)))
    assert code == 0, err
    assert "LoRA style: peft, family unknown, 64/64 tensors matched" in out


def test_declared_base_family_is_checked(tmp_path: Path) -> None:
    lora = tmp_path / "loras" / "style.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(lora_files.SAMPLE.read_bytes())
    code, _, err = run("brands", "check", str(_brand(tmp_path, lora, ", base_family: SDXL")))
    assert code == 2
    assert "base_family SDXL but the model is sd15" in err


@pytest.mark.parametrize(
    ("make", "fmt"), [(lora_files.kohya, "kohya"), (lora_files.legacy, "diffusers-legacy")]
)
def test_other_formats_convert_and_match(
    tmp_path: Path, make: Callable[[Path], Path], fmt: str
) -> None:
    lora = make(tmp_path / "loras" / "style.safetensors")
    code, out, err = run("brands", "check", str(_brand(tmp_path, lora)))
    assert code == 0, err
    assert f"LoRA style: {fmt}, family unknown, 64/64 tensors matched" in out


def test_store_adapters_are_fetched_verified_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from safetensors.torch import save_file

    from pipeline.storage import LocalBlobStore

    monkeypatch.setenv("SHOTLINE_BLOB_ROOT", str(tmp_path / "blobs"))
    monkeypatch.setenv("SHOTLINE_BLOB_BACKEND", "local")
    # Bytes of its own (a nonce in the metadata): no host has fetched this adapter before.
    lora = tmp_path / "upload.safetensors"
    save_file(lora_files.sample_state(), str(lora), metadata={"nonce": uuid.uuid4().hex})
    sha = sha256_file(lora)
    brand = tmp_path / "demo.yaml"
    brand.write_text(
        BRAND.replace("loras/style.safetensors", f"store://loras/{sha}.safetensors").format(
            sha=sha, extra=""
        ),
        encoding="utf-8",
    )
    code, _, err = run("brands", "check", str(brand))
    assert code == 2
    assert f"store://loras/{sha}.safetensors is not in the blob store" in err

    LocalBlobStore(tmp_path / "blobs").put(f"loras/{sha}.safetensors", lora.read_bytes())
    code, out, err = run("brands", "check", str(brand))
    assert code == 0, err
    assert "LoRA style: peft, family unknown, 64/64 tensors matched" in out


def test_a_model_without_configs_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    monkeypatch.setenv("SHOTLINE_MODEL", str(model))
    lora = tmp_path / "loras" / "style.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(lora_files.SAMPLE.read_bytes())
    code, _, err = run("brands", "check", str(_brand(tmp_path, lora)))
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert f"model {model}: {model / 'unet' / 'config.json'}: cannot read config" in err
