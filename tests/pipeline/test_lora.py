"""LoRA pins, format refusal, LRU residency, switching and exact fuse/unfuse on the tiny preset."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.generate.generator import DiffusersGenerator, load_generator
from pipeline.generate.lora import (
    LoraError,
    LoraManager,
    adapter_name,
    verify_adapter,
    write_random_lora,
)
from pipeline.generate.tiny_preset import tiny_model_dir
from pipeline.settings import Settings
from pipeline.types import AdapterRef, ShotParams

torch.set_num_threads(1)  # 2 shared cores

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LORA = ROOT / "samples" / "loras" / "acme_style_tiny.safetensors"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    var = tmp_path_factory.mktemp("var")
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=var,
        model_cache_dir=ROOT / "var" / "models",
        device="cpu",
        batch_size=4,
        lora_cache_size=2,
    )


@pytest.fixture(scope="module")
def gen(settings: Settings) -> DiffusersGenerator:
    return load_generator(settings, "tiny")


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, gen: DiffusersGenerator) -> list[AdapterRef]:
    """Three peft-built adapters for the tiny UNet (random, distinct)."""
    from diffusers import UNet2DConditionModel

    folder = tmp_path_factory.mktemp("loras")
    # A separate copy of the tiny UNet, so building adapters leaves the generator untouched.
    unet = UNet2DConditionModel.from_pretrained(
        tiny_model_dir(gen.settings.model_cache_dir) / "unet"
    )
    refs = []
    for i in range(3):
        path = folder / f"style{i}.safetensors"
        sha = write_random_lora(unet, path, rank=4, seed=100 + i, scale=0.5)
        refs.append(AdapterRef(name=f"style{i}", sha256=sha, weight=0.8, uri=str(path)))
    return refs


@pytest.fixture(autouse=True)
def _clean(gen: DiffusersGenerator):
    yield
    gen.lora.unload_all()


def shot(seed: int = 3, adapters: tuple[AdapterRef, ...] = ()) -> ShotParams:
    return ShotParams(
        shot_id=seed,
        prompt="studio product photo of a mug",
        negative_prompt="blurry",
        seed=seed,
        model_id="tiny",
        width=64,
        height=64,
        steps=4,
        guidance=5.0,
        scheduler="euler",
        adapters=adapters,
    )


def png(gen: DiffusersGenerator, s: ShotParams) -> bytes:
    (out,) = gen.generate([s])
    assert out.error is None, out.error
    assert out.png is not None
    return out.png


def unet_state(gen: DiffusersGenerator) -> dict[str, torch.Tensor]:
    # peft wraps targeted layers (".base_layer") once an adapter was loaded; compare base weights.
    return {
        k.replace(".base_layer", ""): v.detach().clone()
        for k, v in gen.pipe.unet.state_dict().items()
        if "lora_" not in k
    }


def test_pin_mismatch_refused_before_loading(gen: DiffusersGenerator, loras, monkeypatch) -> None:
    bad = replace(loras[0], sha256="0" * 64)
    monkeypatch.setattr(
        gen.pipe, "load_lora_weights", lambda *a, **k: pytest.fail("read an unverified file")
    )
    with pytest.raises(LoraError, match=r"sha256 mismatch.*pinned 0{64}"):
        gen.lora.activate([bad])
    assert gen.lora.resident == []
    # Through generate(): the shot fails with the reason, the worker carries on.
    (out,) = gen.generate([shot(adapters=(bad,))])
    assert out.image is None and out.png is None
    assert "sha256 mismatch" in (out.error or "")


def test_only_safetensors_accepted(tmp_path: Path) -> None:
    pickled = tmp_path / "style.bin"
    pickled.write_bytes(b"pickle bytes")
    ref = AdapterRef(
        name="x", sha256=hashlib.sha256(b"pickle bytes").hexdigest(), weight=1.0, uri=str(pickled)
    )
    with pytest.raises(LoraError, match=r"not a \.safetensors file"):
        verify_adapter(ref)
    missing = replace(ref, uri=str(tmp_path / "gone.safetensors"))
    with pytest.raises(LoraError, match="file not found"):
        verify_adapter(missing)
    with pytest.raises(LoraError, match="only local adapter files"):
        verify_adapter(replace(ref, uri="s3://bucket/style.safetensors"))


def test_lora_changes_output_and_unloading_restores_it(gen: DiffusersGenerator, loras) -> None:
    before_weights = unet_state(gen)
    base = png(gen, shot())
    styled = png(gen, shot(adapters=(loras[0],)))
    assert styled != base
    assert gen.lora.fused  # one fixed adapter set per batch: fused
    # Switching back to no adapters restores the exact base output and base weights.
    assert png(gen, shot()) == base
    assert not gen.lora.fused
    after = unet_state(gen)
    assert before_weights.keys() == after.keys()
    assert all(torch.equal(before_weights[k], after[k]) for k in before_weights)
    gen.lora.unload_all()
    assert png(gen, shot()) == base
    assert not any("lora" in k for k in gen.pipe.unet.state_dict())
    # And the same adapter again gives the same styled image (deterministic fuse).
    assert png(gen, shot(adapters=(loras[0],))) == styled


def test_weight_and_set_matter(gen: DiffusersGenerator, loras) -> None:
    a = png(gen, shot(adapters=(loras[0],)))
    weaker = png(gen, shot(adapters=(replace(loras[0], weight=0.3),)))
    both = png(gen, shot(adapters=(loras[0], loras[1])))
    assert len({a, weaker, both}) == 3


def test_lru_keeps_recent_adapters_resident(gen: DiffusersGenerator, loras) -> None:
    mgr = gen.lora
    start = mgr.loads
    mgr.activate([loras[0]])
    mgr.activate([loras[1]])
    assert mgr.resident == [adapter_name(loras[0]), adapter_name(loras[1])]
    mgr.activate([loras[0]])  # resident: switched with set_adapters, not reloaded
    assert mgr.loads == start + 2
    mgr.activate([loras[2]])  # cache of 2: evicts the least recently used (loras[1])
    assert mgr.resident == [adapter_name(loras[0]), adapter_name(loras[2])]
    assert mgr.loads == start + 3
    peft_names = set(gen.pipe.get_list_adapters().get("unet", []))
    assert peft_names == {adapter_name(loras[0]), adapter_name(loras[2])}


def test_fused_matches_unfused(gen: DiffusersGenerator, settings: Settings, loras) -> None:
    fused = gen.generate([shot(adapters=(loras[0],))])[0].image
    unfused_mgr = LoraManager(gen.pipe, cache_size=2, fuse=False)
    gen.lora.unload_all()
    unfused_mgr.activate([loras[0]])
    assert not unfused_mgr.fused
    with torch.inference_mode():
        img = gen.pipe(
            prompt="studio product photo of a mug",
            negative_prompt="blurry",
            width=64,
            height=64,
            num_inference_steps=4,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(3),
        ).images[0]
    unfused_mgr.unload_all()
    diff = np.asarray(img, dtype=np.int16) - np.asarray(fused, dtype=np.int16)
    assert np.abs(diff).max() <= 2  # same maths, different rounding order


def test_sample_lora_matches_brand_pin(gen: DiffusersGenerator) -> None:
    brand = yaml.safe_load((ROOT / "samples" / "brands" / "acme.yaml").read_text())
    (spec,) = [lo for lo in brand["loras"] if lo["name"] == "acme_style"]
    path = (ROOT / "samples" / "brands" / spec["path"]).resolve()
    assert path == SAMPLE_LORA
    assert SAMPLE_LORA.stat().st_size < 300_000
    ref = AdapterRef(
        name="acme_style",
        sha256=spec["sha256"],
        weight=spec["weight"],
        uri=str(path),
        trigger_word=spec["trigger_word"],
    )
    assert verify_adapter(ref) == path
    assert png(gen, shot(adapters=(ref,))) != png(gen, shot())


def test_ten_switches_leave_weights_bit_identical_to_fresh(
    gen: DiffusersGenerator, settings: Settings, loras
) -> None:
    fresh = load_generator(settings, "tiny")
    fresh_base = unet_state(fresh)
    fresh_a = png(fresh, shot(adapters=(loras[0],)))
    fresh.close()
    for i in range(10):  # 10 fuse/unfuse switches between two adapters
        png(gen, shot(seed=4, adapters=(loras[i % 2],)))
    assert png(gen, shot(adapters=(loras[0],))) == fresh_a
    gen.lora.activate([])  # unfused: the snapshot restored the base weights exactly
    now = unet_state(gen)
    assert now.keys() == fresh_base.keys()
    assert all(torch.equal(now[k], fresh_base[k]) for k in now)
