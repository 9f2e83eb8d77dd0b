"""The generator on the tiny preset: batching, reproducibility, metadata and the OOM split."""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from pipeline.generate.generator import (
    OOM_MESSAGE,
    DiffusersGenerator,
    encode_png,
    load_generator,
    resolve_dtype,
)
from pipeline.generate.modelspec import ModelSpec, model_digest
from pipeline.generate.schedulers import SCHEDULERS, make_scheduler
from pipeline.settings import Settings
from pipeline.types import AdapterRef, ShotParams

torch.set_num_threads(1)  # 2 shared cores

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LORA = AdapterRef(
    name="acme_style",
    sha256="ee07148773317d314958447567ef936a26e225d04a875968e3d7b8f0aa56e528",
    weight=0.8,
    uri=str(ROOT / "samples" / "loras" / "acme_style_tiny.safetensors"),
    trigger_word="acmestyle",
)


@pytest.fixture(scope="module")
def settings(cpu_settings: Settings) -> Settings:
    return cpu_settings


@pytest.fixture(scope="module")
def gen(settings: Settings) -> DiffusersGenerator:
    return load_generator(settings, "tiny")


def shot(shot_id: int, seed: int | None = None, **kw: Any) -> ShotParams:
    base = ShotParams(
        shot_id=shot_id,
        prompt=f"studio product photo of item {shot_id}",
        negative_prompt="blurry, text",
        seed=1000 + shot_id if seed is None else seed,
        model_id="tiny",
        width=64,
        height=64,
        steps=4,
        guidance=5.0,
        scheduler="euler",
    )
    return replace(base, **kw)


def test_load_records_lineage(gen: DiffusersGenerator, settings: Settings) -> None:
    (out,) = gen.generate([shot(1)], batch_id="b-1")
    assert out.error is None
    assert out.shot_id == 1 and out.batch_id == "b-1"
    assert out.image is not None and out.image.size == (64, 64)
    assert out.png is not None and out.sha256 == hashlib.sha256(out.png).hexdigest()
    assert out.model_digest == model_digest(ModelSpec.parse("tiny", settings), settings)
    assert {"load", "denoise", "decode", "batch_size"} <= out.timings.keys()
    assert out.timings["load"] > 0 and out.timings["denoise"] > 0
    assert out.device.startswith("cpu")
    assert {"torch", "diffusers", "transformers", "peft", "python"} <= out.library_versions.keys()
    assert gen.dtype == torch.float32  # auto precision on CPU
    assert gen.batch_invariant  # auto: per-sample linear/conv on CPU


def test_one_tiny_image_well_under_a_second(gen: DiffusersGenerator) -> None:
    gen.generate([shot(2)])  # warm-up (first-call allocations)
    best = min(_timed(gen, shot(2)) for _ in range(3))
    assert best < 0.5, f"one tiny 64x64 image took {best:.3f} s"


def _timed(gen: DiffusersGenerator, s: ShotParams) -> float:
    t0 = time.perf_counter()
    (out,) = gen.generate([s])
    assert out.error is None
    return time.perf_counter() - t0


def test_same_shot_gives_byte_identical_png(gen: DiffusersGenerator) -> None:
    a = gen.generate([shot(3)])[0]
    b = gen.generate([shot(3)])[0]
    assert a.png == b.png and a.sha256 == b.sha256
    assert gen.generate([shot(3, seed=99)])[0].png != a.png


@pytest.mark.parametrize("adapters", [(), (SAMPLE_LORA,)], ids=["base", "lora"])
def test_batch_invariance(gen: DiffusersGenerator, adapters: tuple[AdapterRef, ...]) -> None:
    alone = gen.generate([shot(7, adapters=adapters)])[0]
    batch = gen.generate([shot(i, adapters=adapters) for i in (5, 6, 7, 8)])
    assert [o.shot_id for o in batch] == [5, 6, 7, 8]
    assert all(o.timings["batch_size"] == 4 for o in batch)
    assert batch[2].png == alone.png
    assert len({o.sha256 for o in batch}) == 4  # neighbours differ: own seed each
    # Any position, any batch size: each image equals itself generated alone.
    for out, s in zip(batch, (5, 6, 7, 8), strict=True):
        assert out.png == gen.generate([shot(s, adapters=adapters)])[0].png
    pair = gen.generate([shot(8, adapters=adapters), shot(5, adapters=adapters)])
    assert [o.png for o in pair] == [batch[3].png, batch[0].png]


def test_groups_by_batch_key_and_keeps_input_order(
    gen: DiffusersGenerator, settings: Settings
) -> None:
    shots = [
        shot(10),
        shot(11, steps=3),
        shot(12),
        shot(13, adapters=(SAMPLE_LORA,)),
        shot(14),
        shot(15, steps=3),
    ]
    outs = gen.generate(shots)
    assert [o.shot_id for o in outs] == [10, 11, 12, 13, 14, 15]
    assert [o.timings["batch_size"] for o in outs] == [3, 2, 3, 1, 3, 2]
    assert all(o.error is None for o in outs)
    # Each image matches generating it alone.
    assert outs[1].png == gen.generate([shots[1]])[0].png
    assert outs[3].png == gen.generate([shots[3]])[0].png


def test_batch_size_setting_splits_groups(settings: Settings) -> None:
    small = load_generator(settings.model_copy(update={"batch_size": 2}), "tiny")
    outs = small.generate([shot(i) for i in range(5)])
    assert [o.timings["batch_size"] for o in outs] == [2, 2, 2, 2, 1]


def test_bad_shots_fail_alone(gen: DiffusersGenerator) -> None:
    outs = gen.generate([shot(20), shot(21, scheduler="nope"), shot(22, model_id="other")])
    assert outs[0].error is None
    assert "unknown scheduler 'nope'" in (outs[1].error or "")
    assert "wants model 'other'" in (outs[2].error or "")
    assert outs[1].image is None and outs[2].png is None


def _fake_oom(
    monkeypatch, gen: DiffusersGenerator, fail_at_one: set[int] | None = None
) -> list[int]:
    """Make the pipeline raise CUDA OOM for batches > 1 (and for given seeds at size 1)."""
    sizes: list[int] = []
    pipe_cls = type(gen.pipe)
    real_call = pipe_cls.__call__

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        n = len(kwargs["generator"])  # one per image; prompts may come as embeddings
        sizes.append(n)
        seeds = {g.initial_seed() for g in kwargs["generator"]}
        if n > 1 or (fail_at_one and seeds & fail_at_one):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(pipe_cls, "__call__", call)
    return sizes


def test_oom_splits_batch_down_to_one(gen: DiffusersGenerator, monkeypatch) -> None:
    shots = [shot(i) for i in (30, 31, 32, 33)]
    expected = [o.png for o in gen.generate(shots)]
    sizes = _fake_oom(monkeypatch, gen)
    outs = gen.generate(shots)
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    assert [o.error for o in outs] == [None] * 4
    assert [o.png for o in outs] == expected  # same images whatever the split
    assert [o.timings["batch_size"] for o in outs] == [1, 1, 1, 1]


def test_oom_at_batch_size_one_fails_only_that_shot(gen: DiffusersGenerator, monkeypatch) -> None:
    shots = [shot(i) for i in (40, 41, 42)]
    _fake_oom(monkeypatch, gen, fail_at_one={shots[1].seed})
    outs = gen.generate(shots)
    assert outs[0].error is None and outs[2].error is None
    assert outs[1].image is None and outs[1].png is None
    assert (outs[1].error or "").startswith(OOM_MESSAGE)


def test_encode_png_is_deterministic_and_clean() -> None:
    img = Image.new("RGB", (16, 16), (10, 200, 30))
    img.info["comment"] = "carried metadata"
    data = encode_png(img)
    assert data == encode_png(img.copy())
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks = []
    pos = 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    assert chunks == [b"IHDR", b"IDAT", b"IEND"]  # no tIME/tEXt: bytes depend on pixels only
    assert Image.open(io.BytesIO(data)).tobytes() == img.tobytes()


def test_every_scheduler_name_builds(gen: DiffusersGenerator) -> None:
    for name in SCHEDULERS:
        sched = make_scheduler(name, gen.pipe.scheduler.config)
        assert sched.config.num_train_timesteps == 1000, name
    outs = gen.generate([shot(50, scheduler=name) for name in ("euler_a", "dpmpp_2m", "ddim")])
    assert all(o.error is None for o in outs)
    assert len({o.sha256 for o in outs}) == 3


def test_precision_and_memory_options_on_cpu(settings: Settings, caplog) -> None:
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    opts = settings.model_copy(
        update={"fp8_storage": True, "vae_tiling": True, "vae_slicing": True, "cpu_offload": True}
    )
    with caplog.at_level("WARNING"):
        g = load_generator(opts, "tiny")
    assert "fp8_storage needs a CUDA GPU" in caplog.text  # ignored on CPU, said so
    assert g.pipe.vae.use_tiling and g.pipe.vae.use_slicing
    (out,) = g.generate([shot(60)])
    assert out.error is None and out.image is not None
