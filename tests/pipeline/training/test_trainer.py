"""The LoRA trainer on the tiny preset (CPU): learning, determinism, resume, output format."""

from __future__ import annotations

import copy
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.digests import sha256_file
from pipeline.generate.lora import LoraError, LoraManager, verify_adapter
from pipeline.generate.tiny_preset import build_tiny_pipeline
from pipeline.storage import LocalBlobStore
from pipeline.training.checkpoints import CheckpointStore
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import Dataset, load_dataset, prepare
from pipeline.training.output import save_adapter
from pipeline.training.run import run_training
from pipeline.training.trainer import LoraTrainer, train
from pipeline.training.validation import ValidationPrompt
from pipeline.types import AdapterRef

torch.set_num_threads(1)  # 2 shared cores

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "samples"))
from make_lora_train import make  # noqa: E402

FAST = TrainConfig(
    rank=4, alpha=4, steps=6, lr=1e-3, resolution=64, batch_size=2, checkpoint_every=2
)


@pytest.fixture(scope="module")
def base_pipe() -> Any:
    return build_tiny_pipeline()


@pytest.fixture
def pipe(base_pipe: Any) -> Any:
    return copy.deepcopy(base_pipe)  # training adds adapters; each test gets a clean copy


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    folder = tmp_path_factory.mktemp("mugs")
    make(folder, count=12)
    return load_dataset(folder, "acmestyle")


def _trainer(pipe: Any, dataset: Dataset, cfg: TrainConfig = FAST) -> LoraTrainer:
    tr = LoraTrainer(pipe, cfg)
    tr.cache(
        list(prepare(dataset.images, cfg.resolution, cfg.buckets)),
        [i.caption for i in dataset.images],
    )
    return tr


def test_loss_falls_on_the_sample_set(pipe: Any, dataset: Dataset) -> None:
    cfg = TrainConfig(
        rank=8, alpha=8, steps=40, lr=3e-2, resolution=64, batch_size=2, warmup_steps=3
    )
    tr = _trainer(pipe, dataset, cfg)
    before = tr.eval_loss()
    result = train(tr)
    after = tr.eval_loss()
    assert result.steps_done == 40 and len(result.losses) == 40
    assert after < 0.9 * before, (before, after)


def test_same_seed_same_weights_and_resume_matches(
    pipe: Any, base_pipe: Any, dataset: Dataset, tmp_path: Path
) -> None:
    whole = _trainer(pipe, dataset)
    train(whole)
    sha_whole = save_adapter(whole, tmp_path / "whole.safetensors")

    again = _trainer(copy.deepcopy(base_pipe), dataset)
    train(again)
    assert save_adapter(again, tmp_path / "again.safetensors") == sha_whole

    store = CheckpointStore(LocalBlobStore(tmp_path / "blobs"), "run-7", keep=2)
    first = _trainer(copy.deepcopy(base_pipe), dataset)
    crashed = train(first, store, stop_after=5)  # "killed" one step after the step-4 checkpoint
    assert crashed.steps_done == 5 and store.steps() == [2, 4]
    resumed = _trainer(copy.deepcopy(base_pipe), dataset)
    result = train(resumed, store)
    assert result.resumed_from == 4 and result.steps_done == 6
    assert store.steps() == [4, 6]  # keep=2: older checkpoints deleted
    assert not (tmp_path / "blobs" / store.keys(2)[0]).exists()
    assert save_adapter(resumed, tmp_path / "resumed.safetensors") == sha_whole
    assert len(result.losses) == 6


def test_checkpoint_blobs_are_not_pickle(pipe: Any, dataset: Dataset, tmp_path: Path) -> None:
    store = CheckpointStore(LocalBlobStore(tmp_path), "r", keep=1)
    train(_trainer(pipe, dataset), store, stop_after=2)
    tkey, _ = store.keys(2)
    raw = (tmp_path / tkey).read_bytes()
    assert not raw.startswith(b"\x80")  # pickle protocol marker
    from safetensors.torch import load

    tensors = load(raw)
    assert any(k.startswith("unet.") for k in tensors) and any(
        k.startswith("opt.") for k in tensors
    )
    assert "rng.torch" in tensors


def _render(p: Any, seed: int = 3) -> np.ndarray:
    out = p(
        "acmestyle, a teal mug",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return np.asarray(out.images[0])


def test_adapter_loads_through_lora_manager_and_changes_output(
    pipe: Any, base_pipe: Any, dataset: Dataset, tmp_path: Path
) -> None:
    cfg = TrainConfig(
        rank=4, alpha=8, steps=4, lr=5e-3, resolution=64, batch_size=2, text_encoder=True
    )
    out = run_training(pipe, dataset, cfg, tmp_path / "acme_mug.safetensors")
    assert out.adapter_path is not None and out.adapter_sha256 == sha256_file(out.adapter_path)
    ref = AdapterRef("acme_mug", out.adapter_sha256, 1.0, str(out.adapter_path))
    assert verify_adapter(ref) == out.adapter_path

    target = copy.deepcopy(base_pipe)
    plain = _render(target)
    mgr = LoraManager(target, fuse=False)
    mgr.activate([ref])
    assert mgr.loads == 1
    adapted = _render(target)
    assert np.abs(adapted - plain).max() > 1e-3
    mgr.activate([])
    np.testing.assert_allclose(_render(target), plain, atol=1e-6)

    with pytest.raises(LoraError, match="sha256 mismatch"):
        verify_adapter(AdapterRef("acme_mug", "0" * 64, 1.0, str(out.adapter_path)))


def test_run_writes_validation_sheet(pipe: Any, dataset: Dataset, tmp_path: Path) -> None:
    cfg = TrainConfig(rank=4, alpha=4, steps=2, lr=5e-3, resolution=64, batch_size=1)
    prompts = [ValidationPrompt("acmestyle, a coral mug", seed=1)]
    out = run_training(
        pipe, dataset, cfg, tmp_path / "a.safetensors", validation=prompts, banner="run 1"
    )
    assert out.sheet_png is not None
    sheet = Image.open(io.BytesIO(out.sheet_png))
    assert sheet.format == "PNG" and sheet.width > 64


def test_stopped_run_writes_no_adapter(pipe: Any, dataset: Dataset, tmp_path: Path) -> None:
    out = run_training(pipe, dataset, FAST, tmp_path / "x.safetensors", stop_after=1)
    assert out.adapter_path is None and not (tmp_path / "x.safetensors").exists()


def test_bad_config_refused() -> None:
    with pytest.raises(ValueError, match="rank must be"):
        TrainConfig(rank=0)
