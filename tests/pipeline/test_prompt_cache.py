"""Text-embedding caching and the per-architecture batch table, on the tiny preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.generate.batch_table import architecture, batch_size_for
from pipeline.generate.generator import DiffusersGenerator, load_generator
from pipeline.generate.prompt_cache import PromptCache
from pipeline.settings import Settings
from pipeline.types import ShotParams

torch.set_num_threads(1)  # 2 shared cores
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> DiffusersGenerator:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=tmp_path_factory.mktemp("var"),
        model_cache_dir=ROOT / "var" / "models",
        device="cpu",
        batch_size=4,
    )
    return load_generator(settings, "tiny")


def shots(prompts: list[str], negative: str = "blurry, text") -> list[ShotParams]:
    return [
        ShotParams(
            shot_id=i,
            prompt=p,
            negative_prompt=negative,
            seed=10 + i,
            model_id="tiny",
            width=32,
            height=32,
            steps=2,
            guidance=5.0,
            scheduler="euler",
        )
        for i, p in enumerate(prompts)
    ]


PROMPTS = ["a red mug", "a blue mug", "a red mug", "a green lamp"]


def test_cached_images_equal_uncached(gen: DiffusersGenerator) -> None:
    gen.prompts = PromptCache(enabled=False)
    plain = [o.sha256 for o in gen.generate(shots(PROMPTS))]
    assert None not in plain and len(set(plain)) == 4
    cache = gen.prompts = PromptCache(enabled=True, max_entries=16)
    assert [o.sha256 for o in gen.generate(shots(PROMPTS))] == plain
    # 3 distinct prompts + 1 shared negative, each encoded once for the batch of 4.
    assert cache.encoded == 4
    assert [o.sha256 for o in gen.generate(shots(PROMPTS))] == plain
    assert cache.encoded == 4 and cache.hits == 4  # the second batch came from the LRU


def test_per_batch_only_and_lru_bound(gen: DiffusersGenerator) -> None:
    cache = gen.prompts = PromptCache(enabled=True, max_entries=0)
    gen.generate(shots(PROMPTS[:2]))
    gen.generate(shots(PROMPTS[:2]))
    assert cache.encoded == 6 and cache.hits == 0  # nothing kept across batches
    cache = gen.prompts = PromptCache(enabled=True, max_entries=2)
    gen.generate(shots(["a", "b", "c"], negative="n"))
    assert len(cache._lru) == 2


def test_empty_negative_and_raw_fallback(gen: DiffusersGenerator) -> None:
    gen.prompts = PromptCache(enabled=False)
    plain = gen.generate(shots(["a red mug"], negative=""))[0].sha256
    gen.prompts = PromptCache(enabled=True, max_entries=4)
    assert gen.generate(shots(["a red mug"], negative=""))[0].sha256 == plain

    class OtherPipeline:  # an unknown pipeline type gets its texts as they are
        pass

    kwargs = PromptCache().pipe_kwargs(OtherPipeline(), ["p"], ["n"])
    assert kwargs == {"prompt": ["p"], "negative_prompt": ["n"]}


def test_batch_table(gen: DiffusersGenerator) -> None:
    assert architecture(gen.pipe) == "sd"
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        batch_size=3,
        batch_sizes={"sd@512x512": 8, "sdxl": 4},
    )
    assert batch_size_for(s, "sd", 512, 512) == 8
    assert batch_size_for(s, "sd", 768, 768) == 3
    assert batch_size_for(s, "sdxl", 1024, 1024) == 4


def test_batch_table_splits_generate(
    gen: DiffusersGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOTLINE_BATCH_SIZES", '{"sd@32x32": 2}')
    gen.settings = Settings(_env_file=None, batch_size=4)  # type: ignore[call-arg]
    assert gen.settings.batch_sizes == {"sd@32x32": 2}
    outs = gen.generate(shots(PROMPTS[:3]))
    assert [o.timings["batch_size"] for o in outs] == [2.0, 2.0, 1.0]


def tiny_sdxl(settings: Settings):  # -> StableDiffusionXLPipeline
    """An SDXL pipeline at toy size (two text encoders, pooled + time embeddings)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from pipeline.generate.tiny_preset import ensure_tiny_model

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + pooled 32
        cross_attention_dim=64,  # the two encoders' hidden states side by side
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=16,
    )
    cfg = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        projection_dim=32,
        hidden_act="gelu",
    )
    tok = CLIPTokenizer.from_pretrained(ensure_tiny_model(settings.model_cache_dir) / "tokenizer")
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(cfg),
        text_encoder_2=CLIPTextModelWithProjection(cfg),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=EulerDiscreteScheduler(),
        force_zeros_for_empty_prompt=True,
    )


def test_sdxl_cached_equals_uncached(gen: DiffusersGenerator) -> None:
    sdxl = DiffusersGenerator.from_pipeline(tiny_sdxl(gen.settings), gen.settings, "tiny")
    assert architecture(sdxl.pipe) == "sdxl"
    # An empty negative is encoded, not zeroed: the pipeline zeroes only negative_prompt=None.
    batch = shots(PROMPTS[:3]) + shots(["a red mug"], negative="")
    sdxl.prompts = PromptCache(enabled=False)
    plain = [o.sha256 for o in sdxl.generate(batch)]
    assert None not in plain and len(set(plain)) == 4
    cache = sdxl.prompts = PromptCache(enabled=True, max_entries=8)
    assert [o.sha256 for o in sdxl.generate(batch)] == plain
    assert cache.encoded == 4  # "a red mug", "a blue mug", "blurry, text" and ""
    sdxl.close()
