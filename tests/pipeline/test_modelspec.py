"""Model strings, the safetensors-only rule, the tiny preset and the cached weight digest."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import open_clip
import pytest
import torch
from transformers import CLIPTokenizer

from pipeline.generate import modelspec
from pipeline.generate.modelspec import ModelLoadError, ModelSpec, load_pipeline, model_digest
from pipeline.generate.tiny_preset import ensure_tiny_model, tiny_model_dir
from pipeline.settings import Settings

torch.set_num_threads(1)  # 2 shared cores


def test_parse_kinds(tmp_settings: Settings, tmp_path: Path) -> None:
    assert ModelSpec.parse("tiny", tmp_settings).kind == "tiny"
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")
    assert ModelSpec.parse(str(ckpt), tmp_settings) == ModelSpec(str(ckpt), "single_file", ckpt)
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert ModelSpec.parse(str(folder), tmp_settings).kind == "folder"
    assert ModelSpec.parse("stabilityai/sdxl-turbo", tmp_settings).kind == "repo"


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth", ".CKPT"])
def test_pickle_formats_refused(tmp_settings: Settings, tmp_path: Path, suffix: str) -> None:
    weights = tmp_path / f"model{suffix}"
    weights.write_bytes(b"not even read")
    with pytest.raises(ModelLoadError, match=r"pickle format.*only \.safetensors"):
        ModelSpec.parse(str(weights), tmp_settings)
    assert issubclass(ModelLoadError, ValueError)


def test_bad_model_strings(tmp_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="checkpoint file not found"):
        ModelSpec.parse(str(tmp_path / "missing.safetensors"), tmp_settings)
    with pytest.raises(ModelLoadError, match=r"no model_index\.json"):
        ModelSpec.parse(str(tmp_path), tmp_settings)
    with pytest.raises(ModelLoadError, match="not a repo id"):
        ModelSpec.parse("./nowhere/at/all", tmp_settings)
    with pytest.raises(ModelLoadError, match="empty"):
        ModelSpec.parse("  ", tmp_settings)


def test_pickle_only_folder_refused(tmp_settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "legacy"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    spec = ModelSpec.parse(str(folder), tmp_settings)
    with pytest.raises(ModelLoadError, match=r"only pickle weights.*\.safetensors"):
        load_pipeline(spec, tmp_settings)


def test_repo_id_not_cached_is_clear_error(tmp_settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec.parse("shotline-test/definitely-not-cached", tmp_settings)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        load_pipeline(spec, tmp_settings)


def test_tiny_loads_through_production_path(tmp_settings: Settings) -> None:
    from diffusers import StableDiffusionPipeline

    spec = ModelSpec.parse("tiny", tmp_settings)
    pipe = load_pipeline(spec, tmp_settings, torch_dtype=torch.float32)
    assert isinstance(pipe, StableDiffusionPipeline)
    folder = tiny_model_dir(tmp_settings.model_cache_dir)
    # Only safetensors on disk, written by save_pretrained.
    assert sorted(p.name for p in folder.rglob("*.safetensors")) == [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.safetensors",
        "model.safetensors",
    ]
    assert not [p for p in folder.rglob("*") if p.suffix in modelspec.PICKLE_SUFFIXES]
    # The same folder named as a plain local diffusers folder is the same model.
    as_folder = ModelSpec.parse(str(folder), tmp_settings)
    assert as_folder.kind == "folder"
    assert model_digest(as_folder, tmp_settings) == model_digest(spec, tmp_settings)


def test_tiny_tokenizer_matches_openai_clip(tmp_settings: Settings) -> None:
    folder = ensure_tiny_model(tmp_settings.model_cache_dir)
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    ref = open_clip.tokenizer.SimpleTokenizer()
    for text in [
        "a photo of a cat",
        "studio product photo of ACME Mug, on a seamless white background",
        "Hello, World! 123 émigré café naïve 東京 🙂",
        "  multiple   spaces\tand\nnewlines  ",
    ]:
        expected = [ref.sot_token_id, *ref.encode(text), ref.eot_token_id]
        assert tok(text).input_ids == expected, text
    assert tok.pad_token == "<|endoftext|>"
    assert tok.model_max_length == 77


def test_digest_matches_files_and_is_cached(tmp_settings: Settings, tmp_path: Path, monkeypatch):
    ckpt = tmp_path / "one.safetensors"
    ckpt.write_bytes(b"weights v1")
    settings = tmp_settings.model_copy(update={"model_cache_dir": tmp_path / "cache"})
    spec = ModelSpec.parse(str(ckpt), settings)
    assert model_digest(spec, settings) == hashlib.sha256(b"weights v1").hexdigest()
    cache = json.loads((tmp_path / "cache" / modelspec.DIGEST_CACHE_NAME).read_text())
    assert cache[str(ckpt.resolve())]["sha256"] == hashlib.sha256(b"weights v1").hexdigest()

    calls: list[Path] = []
    real = modelspec.sha256_file
    monkeypatch.setattr(modelspec, "sha256_file", lambda p: calls.append(p) or real(p))
    model_digest(spec, settings)
    assert calls == []  # path + mtime + size unchanged: served from the cache

    ckpt.write_bytes(b"weights v2")
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert model_digest(spec, settings) == hashlib.sha256(b"weights v2").hexdigest()
    assert calls == [ckpt.resolve()] or calls == [ckpt]


def test_tiny_build_survives_a_race(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(ensure_tiny_model(cache))
        except BaseException as exc:  # collected and re-checked in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [cache / "tiny-sd"] * 2
    assert (cache / "tiny-sd" / "model_index.json").is_file()
    # Temp build folders were renamed into place or discarded, never left behind.
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-sd"]
