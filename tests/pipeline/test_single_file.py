"""Single-file checkpoints load offline: with ``SHOTLINE_MODEL_CONFIG`` or the configs shipped
for their family, and the process keeps hub access off whatever the environment says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.generate.generator import load_generator
from pipeline.generate.lora_check import target_from_folder
from pipeline.generate.modelspec import ModelLoadError, ModelSpec, load_pipeline
from pipeline.generate.singlefile import (
    SHIPPED_FAMILIES,
    SingleFileError,
    checkpoint_family,
    family_config_folder,
)
from pipeline.generate.tiny_preset import ensure_tiny_model
from pipeline.settings import Settings
from pipeline.types import ShotParams
from tests.conftest import ROOT
from tests.ldm_convert import write_ldm_checkpoint


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset as one original-layout checkpoint (its weights, renamed)."""
    folder = ensure_tiny_model(ROOT / "var" / "models")
    out = tmp_path_factory.mktemp("ckpt") / "tiny-sd.safetensors"
    return write_ldm_checkpoint(folder, out)


def _shots(model_id: str) -> list[ShotParams]:
    return [
        ShotParams(
            shot_id=i,
            prompt=f"studio product photo of item {i}",
            negative_prompt="blurry",
            seed=4000 + i,
            model_id=model_id,
            width=64,
            height=64,
            steps=3,
            guidance=5.0,
            scheduler="euler",
        )
        for i in range(2)
    ]


def test_single_file_reproduces_the_folder_byte_for_byte(
    cpu_settings: Settings, tiny_file: Path
) -> None:
    folder = ensure_tiny_model(cpu_settings.model_cache_dir)
    settings = cpu_settings.model_copy(update={"model_config_dir": folder})
    from_folder = load_generator(settings, "tiny").generate(_shots("tiny"))
    single = load_generator(settings, str(tiny_file))
    from_file = single.generate(_shots(str(tiny_file)))
    assert [o.error for o in from_file] == [None, None]
    assert [o.png for o in from_file] == [o.png for o in from_folder]
    assert single.model_digest != from_folder[0].model_digest  # the file's own sha256


def test_family_read_from_the_tensor_names(tmp_path: Path, tiny_file: Path) -> None:
    def fake(name: str, keys: list[str], in_channels: int = 4) -> Path:
        state = {k: torch.zeros(1) for k in keys}
        state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1, in_channels, 1, 1)
        save_file(state, str(tmp_path / name))
        return tmp_path / name

    te_l = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    te_h = "cond_stage_model.model.ln_final.weight"
    te_g = "conditioner.embedders.1.model.ln_final.weight"
    assert checkpoint_family(fake("a.safetensors", [te_l])) == "sd15"
    assert checkpoint_family(fake("b.safetensors", [te_h])) == "sd2"
    assert checkpoint_family(fake("c.safetensors", [te_g])) == "sdxl"
    assert checkpoint_family(fake("d.safetensors", [te_g], 9)) == "sdxl_inpaint"
    assert checkpoint_family(tiny_file) == "sd15"  # SD1.5 names, tiny shapes
    with pytest.raises(SingleFileError, match="set SHOTLINE_MODEL_CONFIG"):
        checkpoint_family(fake("e.safetensors", ["something.else"]))
    with pytest.raises(SingleFileError, match="sd15 checkpoint with 9 input channels"):
        checkpoint_family(fake("f.safetensors", [te_l], 9))


@pytest.mark.parametrize(
    ("family", "unet_m", "te_names"),
    [
        ("sd15", 859.52, {"text_encoder": 123.06}),
        ("sd2", 865.91, {"text_encoder": 340.39}),
        ("sdxl", 2567.46, {"text_encoder": 123.06, "text_encoder_2": 694.66}),
        ("sdxl_inpaint", 2567.48, {"text_encoder": 123.06, "text_encoder_2": 694.66}),
    ],
)
def test_shipped_configs_build_the_published_architectures(
    tmp_path: Path, family: str, unet_m: float, te_names: dict[str, float]
) -> None:
    """Built on the meta device from the shipped configs, each family has the published
    parameter counts (millions), so its checkpoints' tensors have somewhere to go."""
    import transformers
    from diffusers import UNet2DConditionModel

    assert family in SHIPPED_FAMILIES
    folder = family_config_folder(family, tmp_path)
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
        assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 2) == unet_m
        for comp, millions in te_names.items():
            te_cfg = json.loads((folder / comp / "config.json").read_text())
            cls = getattr(transformers, te_cfg["architectures"][0])
            model = cls(transformers.CLIPTextConfig(**te_cfg))
            assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions
    assert (folder / "tokenizer" / "vocab.json").is_file()
    assert target_from_folder(folder).family == family.removesuffix("_inpaint")


def test_shipped_config_used_when_none_given(cpu_settings: Settings, tiny_file: Path) -> None:
    """No SHOTLINE_MODEL_CONFIG: the sd15 configs are taken from disk (no hub); the tiny
    weights do not fit them, which is the one-line error naming the file."""
    settings = cpu_settings.model_copy(update={"model_config_dir": None})
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(ModelSpec.parse(str(tiny_file), settings), settings, torch.float32)
    message = str(info.value)
    assert message.startswith(f"{tiny_file}: cannot load as StableDiffusionPipeline")
    assert "single-file-configs/sd15-" in message


def test_model_config_must_be_a_diffusers_folder(
    cpu_settings: Settings, tiny_file: Path, tmp_path: Path
) -> None:
    settings = cpu_settings.model_copy(update={"model_config_dir": tmp_path})
    with pytest.raises(ModelLoadError, match=f"SHOTLINE_MODEL_CONFIG={tmp_path}: not a diffusers"):
        load_pipeline(ModelSpec.parse(str(tiny_file), settings), settings)


NETWORK_BLOCKED = """
import json, os, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
assert "HF_HUB_OFFLINE" not in os.environ
from pathlib import Path
from pipeline.settings import Settings
from pipeline.generate.modelspec import ModelLoadError, ModelSpec, load_pipeline
import huggingface_hub
outcome = {"env": os.environ.get("HF_HUB_OFFLINE")}
try:
    huggingface_hub.hf_hub_download("stabilityai/stable-diffusion-xl-base-1.0", "model_index.json")
except Exception as exc:
    outcome["hub"] = type(exc).__name__
settings = Settings(_env_file=None, model_cache_dir=Path(sys.argv[2]))
try:
    load_pipeline(ModelSpec.parse(sys.argv[1], settings), settings)
except ModelLoadError as exc:
    outcome["shipped"] = "cannot load as StableDiffusionPipeline" in str(exc)
os.environ["SHOTLINE_MODEL_CONFIG"] = sys.argv[3]
settings = Settings(_env_file=None, model_cache_dir=Path(sys.argv[2]))
outcome["loaded"] = type(load_pipeline(ModelSpec.parse(sys.argv[1], settings), settings)).__name__
outcome["attempts"] = attempts
print(json.dumps(outcome))
"""


def test_nothing_connects_with_the_network_blocked(cpu_settings: Settings, tiny_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = str(ROOT)
    folder = ensure_tiny_model(cpu_settings.model_cache_dir)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NETWORK_BLOCKED,
            str(tiny_file),
            str(cpu_settings.model_cache_dir),
            str(folder),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome == {
        "env": "1",
        "hub": outcome.get("hub"),
        "shipped": True,
        "loaded": "StableDiffusionPipeline",
        "attempts": [],
    }
    assert outcome["hub"]  # refused offline, before any connection


def test_digest_covers_what_is_loaded_only(cpu_settings: Settings, tmp_path: Path) -> None:
    import shutil

    from pipeline.generate.modelspec import loaded_files, model_digest

    folder = tmp_path / "model"
    shutil.copytree(ensure_tiny_model(cpu_settings.model_cache_dir), folder)
    spec = ModelSpec.parse(str(folder), cpu_settings)
    before = model_digest(spec, cpu_settings)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"

    # An unused variant beside the weights, a root checkpoint, a README: not loaded.
    shutil.copy(unet, folder / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    shutil.copy(unet, folder / "sd15-everything.safetensors")
    (folder / "README.md").write_text("a model card")
    assert model_digest(spec, cpu_settings) == before
    names = {f.relative_to(folder).as_posix() for f in loaded_files(folder)}
    assert "unet/diffusion_pytorch_model.safetensors" in names
    assert "unet/config.json" in names and "tokenizer/tokenizer_config.json" in names
    assert not {n for n in names if "fp16" in n or ("/" not in n and n != "model_index.json")}

    # What is loaded changes the digest: a config, as much as the weights.
    cfg = folder / "scheduler" / "scheduler_config.json"
    cfg.write_text(cfg.read_text().replace('"steps_offset": 1', '"steps_offset": 0'))
    assert model_digest(spec, cpu_settings) != before
