"""``shotline lora train|status|list|show`` in-process (SQLite, tiny preset, CPU)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from catalog import migrate
from pipeline.brand.loader import load_brand
from pipeline.digests import sha256_file
from tasks.cli.app import app
from tasks.context import reset_contexts
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "samples"))
from make_lora_train import make

ACME = ROOT / "samples" / "brands" / "acme.yaml"
FAST = ["--steps", "4", "--resolution", "64", "--rank", "4", "--alpha", "4"]
FAST += ["--checkpoint-every", "2", "--batch-size", "2"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def brand_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    url = f"sqlite:///{tmp_path / 'shotline.db'}"
    migrate.upgrade(url)
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    brands = tmp_path / "brands"
    brands.mkdir()
    text = ACME.read_text().replace(
        "../loras/acme_style_tiny.safetensors",
        str(ROOT / "samples/loras/acme_style_tiny.safetensors"),
    )
    text += '\nlora_validation:\n  - {prompt: "acmestyle, a teal mug", seed: 3}\n'
    (brands / "acme.yaml").write_text(text)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SHOTLINE_BRANDS_DIR", str(brands))
    monkeypatch.setenv("SHOTLINE_MODEL_CACHE_DIR", str(ROOT / "var" / "models"))
    monkeypatch.setenv("SHOTLINE_DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)
    yield brands / "acme.yaml"
    reset_contexts()


def test_train_writes_pinned_adapter_into_brand(brand_file: Path, tmp_path: Path) -> None:
    images = tmp_path / "mugs"
    make(images, count=10)
    code, out, err = run(
        "lora", "train", "--brand", str(brand_file), "--images", str(images),
        "--name", "acme_mug", "--trigger", "acmestyle", *FAST, "--write-brand",
    )  # fmt: skip
    assert code == 0, err
    assert "only 10 images" in err  # a warning, not a refusal
    brand = load_brand(brand_file)
    spec = brand.lora("acme_mug")
    # The adapter travels in the blob store under its content key (issue 27).
    assert spec.path == f"store://loras/{spec.sha256}.safetensors"
    assert spec.sha256 == sha256_file(
        tmp_path / "var" / "blobs" / "loras" / f"{spec.sha256}.safetensors"
    )
    assert spec.version == "train-1" and spec.trigger_word == "acmestyle"
    assert "# trained by `shotline lora train`: run 1" in brand_file.read_text()

    code, out, _ = run("lora", "status", "1")
    assert code == 0 and "run 1 acme_mug: done step 4/4" in out
    code, out, _ = run("lora", "show", "1")
    info = json.loads(out)
    assert info["adapter"]["sha256"] == spec.sha256 and len(info["checkpoints"]) == 4
    assert info["validation_key"] == f"training/{info['run_key']}/validation.png"
    assert (tmp_path / "var" / "blobs" / info["validation_key"]).is_file()
    code, out, _ = run("lora", "list")
    assert code == 0 and "acme_mug" in out
    code, out, _ = run("lineage", "--training", "1", "--json")
    assert code == 0 and json.loads(out) == []  # nothing published with it yet
    code, _, err = run("lineage", "--training", "99")
    assert code == 2 and "no training run 99" in err


def test_bad_datasets_one_line_each_exit_2(brand_file: Path, tmp_path: Path) -> None:
    images = tmp_path / "bad"
    make(images, count=10)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    Image.new("RGB", (100, 300)).save(images / "tiny.png")
    code, _, err = run(
        "lora", "train", "--brand", str(brand_file), "--images", str(images),
        "--name", "x", "--trigger", "acmestyle", *FAST,
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith(f"error: {images / 'broken.png'}: not a readable image")
    assert lines[1].startswith(f"error: {images / 'tiny.png'}: image is 100x300 pixels")

    few = tmp_path / "few"
    make(few, count=3)
    code, _, err = run(
        "lora", "train", "--brand", str(brand_file), "--images", str(few),
        "--name", "x", "--trigger", "acmestyle", *FAST,
    )  # fmt: skip
    assert (
        code == 2
        and err.strip() == f"error: {few}: 3 usable images; at least 10 are needed to train"
    )

    code, _, err = run(
        "lora", "train", "--brand", str(brand_file), "--images", str(tmp_path / "missing"),
        "--name", "x", "--trigger", "acmestyle",
    )  # fmt: skip
    assert code == 2 and "not a folder of training images" in err

    code, _, err = run(
        "lora", "train", "--brand", str(brand_file), "--images", str(few),
        "--name", "x", "--trigger", "t", "--rank", "0",
    )  # fmt: skip
    assert code == 2 and "rank must be" in err
    code, _, err = run("lora", "status", "99")
    assert code == 2 and "no training run 99" in err
