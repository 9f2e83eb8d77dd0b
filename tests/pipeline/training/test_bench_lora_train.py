"""The LoRA training benchmark's code paths at tiny size on CPU (the CUDA run shares them)."""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import pytest
import torch

from pipeline.generate.tiny_preset import build_tiny_pipeline
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
import bench_lora_train as bench


@pytest.fixture(scope="module")
def tiny() -> Any:
    return build_tiny_pipeline()


def test_both_paths_train_and_report(tiny: Any) -> None:
    args = argparse.Namespace(
        arch="tiny", rank=4, batch=2, resolution=64, steps=2, warmup=1, precision="bf16"
    )
    cpu = torch.device("cpu")
    ours = bench.bench_ours(copy.deepcopy(tiny), args, cpu)
    plain = bench.bench_plain(copy.deepcopy(tiny), args, cpu)
    for row in (ours, plain):
        assert row.steps == 2 and row.steps_per_s > 0 and row.batch == 2
    assert (ours.path, plain.path) == ("shotline", "diffusers+peft")
