"""The training set is streamed (issue 31 item 2): memory before step 1 is bounded by the
configuration, not by the set's size; each image is decoded and encoded when a step first
draws it, its latent cached on disk; a resumed run reuses the cache and ends with the same
adapter as an uninterrupted one."""

from __future__ import annotations

import copy
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from PIL import Image

from pipeline.generate.tiny_preset import build_tiny_pipeline
from pipeline.storage import LocalBlobStore
from pipeline.training.checkpoints import CheckpointStore
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import load_dataset
from pipeline.training.run import run_training
from pipeline.training.trainer import Progress

torch.set_num_threads(1)  # 2 shared cores

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "samples"))
from make_lora_train import make  # noqa: E402

CFG = TrainConfig(
    rank=4, alpha=4, steps=6, lr=1e-3, resolution=64, batch_size=2, checkpoint_every=2
)


@pytest.fixture(scope="module")
def base_pipe() -> Any:
    return build_tiny_pipeline()


def _big_set(root: Path, n: int, side: int) -> None:
    root.mkdir(parents=True)
    for i in range(n):  # distinct colours: duplicates (same sha256) would be dropped
        img = Image.new("RGB", (side, side), (i * 4 % 256, 255 - i * 4 % 256, 90))
        img.save(root / f"shot_{i:03d}.png", compress_level=1)
        (root / f"shot_{i:03d}.txt").write_text(f"a mug in colour {i}")


class _PeakRss:
    """The largest resident set size seen, sampled every 2 ms on a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_memory_before_step_1_does_not_grow_with_the_set(base_pipe: Any, tmp_path: Path) -> None:
    # Warm up torch and the pipeline on a small set so first-call allocations don't count.
    make(tmp_path / "small", count=10)
    small = load_dataset(tmp_path / "small", "acmestyle")
    run_training(copy.deepcopy(base_pipe), small, CFG, tmp_path / "w.safetensors", stop_after=1)

    _big_set(tmp_path / "big", 60, 1024)  # 60 x 3 MiB decoded: held whole, ~190 MiB
    pipe = copy.deepcopy(base_pipe)
    at_step_1: list[int] = []
    rss_before = psutil.Process().memory_info().rss

    def on_progress(p: Progress) -> None:
        at_step_1.append(p.step)
        raise KeyboardInterrupt  # stop the measurement at step 1

    with _PeakRss() as rss:
        dataset = load_dataset(tmp_path / "big", "acmestyle")
        with pytest.raises(KeyboardInterrupt):
            run_training(pipe, dataset, CFG, tmp_path / "x.safetensors", on_progress=on_progress)
    assert len(dataset.images) == 60 and at_step_1 == [1]
    grew_mib = (rss.peak - rss_before) / (1 << 20)
    assert grew_mib < 100, f"peak RSS grew by {grew_mib:.0f} MiB before step 1"


def test_first_step_encodes_only_its_batch_and_resume_reuses_the_cache(
    base_pipe: Any, tmp_path: Path
) -> None:
    make(tmp_path / "mugs", count=12)
    dataset = load_dataset(tmp_path / "mugs", "acmestyle", decode=False)
    whole = run_training(copy.deepcopy(base_pipe), dataset, CFG, tmp_path / "whole.safetensors")

    work = tmp_path / "work"
    latents = work / "latents"
    seen: list[int] = []

    def on_progress(p: Progress) -> None:
        if p.step == 1:  # one image latent and one caption embedding per drawn image
            seen.append(len(list(latents.glob("*.safetensors"))))

    store = CheckpointStore(LocalBlobStore(tmp_path / "blobs"), "run-1", keep=2)
    crashed = run_training(
        copy.deepcopy(base_pipe),
        dataset,
        CFG,
        tmp_path / "out.safetensors",
        store=store,
        on_progress=on_progress,
        stop_after=3,
        work_dir=work,
    )
    assert crashed.adapter_sha256 is None
    assert 2 <= seen[0] <= 2 * CFG.batch_size, seen
    cached = {p.name: p.stat().st_mtime_ns for p in latents.glob("*.safetensors")}
    assert 0 < len(cached) < 2 * len(dataset.images)  # 3 steps drew part of the set

    resumed = run_training(
        copy.deepcopy(base_pipe),
        dataset,
        CFG,
        tmp_path / "out.safetensors",
        store=store,
        work_dir=work,
    )
    assert resumed.result.resumed_from == 2
    assert resumed.adapter_sha256 == whole.adapter_sha256
    assert not latents.exists()  # removed once the adapter is written


def test_an_image_changed_mid_run_is_one_line(base_pipe: Any, tmp_path: Path) -> None:
    from pipeline.training.dataset import DatasetError

    make(tmp_path / "mugs", count=10)
    dataset = load_dataset(tmp_path / "mugs", "acmestyle")
    for item in dataset.images:
        item.path.write_bytes(b"\x89PNG\r\n\x1a\nswapped after the check")
    with pytest.raises(DatasetError) as err:
        run_training(copy.deepcopy(base_pipe), dataset, CFG, tmp_path / "x.safetensors")
    [line] = err.value.problems
    assert line.endswith(": changed since the training set was checked")
