"""The GPU shakedown and benchmark scripts, run on the CPU at tiny sizes.

GPU time comes in minutes, so a typo in these scripts must show up here first. The
numbers on the CPU mean nothing; what is checked is that every stage runs to the end,
writes its JSON and reports the shakedown's checks as passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "tests" / "benchmarks" / "gpu"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_shakedown_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "shakedown.json"
    cmd = [sys.executable, str(GPU / "shakedown.py"), "--device", "cpu", "--tiny"]
    # fp16 on the CPU and compile are slow; their code path is the same generator call.
    cmd += ["--skip", "compile,fp16", "--json-out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["check"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["alone_vs_batch8"]["ok"] and rows["alone_vs_batch8"]["max"] == 0
    assert rows["oom_split"]["ok"] and rows["oom_split"]["simulated"] is True
    assert rows["oom_split"]["batch_sizes_run"] == [2.0]
    assert rows["lora_switch"]["ok"] and rows["lora_switch"]["weight_drift"] == 0.0
    assert rows["option:bf16"]["ok"] and rows["option:compile"]["skipped"]


@pytest.mark.slow
def test_bench_and_summary_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench_tiny.json"
    cmd = [sys.executable, str(ROOT / "tests" / "benchmarks" / "bench_generate.py")]
    cmd += ["--quick", "--batches", "2", "--json-out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["matmul_peak_tflops"] > 0
    paths = [r["path"] for r in data["rows"]]
    assert paths == ["diffusers", "shotline"] and data["rows"][1]["ratio"] > 0
    summ = subprocess.run(
        [sys.executable, str(GPU / "summarize.py"), str(tmp_path)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert summ.returncode == 0, summ.stdout + summ.stderr
    workloads = json.loads((tmp_path / "summary.json").read_text())["workloads"]
    assert [w["arch"] for w in workloads] == ["tiny"] and workloads[0]["target"] is None
