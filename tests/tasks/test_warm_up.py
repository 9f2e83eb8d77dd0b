"""A worker process loads what it needs once, before its first task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, sys
from pipeline.settings import Settings
from tasks.context import context_for
from tasks.signals import warm_up
settings = Settings()
warm_up(settings, queues=[sys.argv[1]])
ctx = context_for(settings)
print(json.dumps({
    "gate": ctx._gate is not None,
    "generators": sorted(ctx._generators),
    "store": type(ctx._store).__name__,
    "frozen": gc.get_freeze_count(),
}))
"""


def _warm(tmp_path: Path, queue: str, gate_on: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
    env.update(
        SHOTLINE_VAR_DIR=str(tmp_path / "var"),
        SHOTLINE_MODEL_CACHE_DIR=str(ROOT / "var" / "models"),
        SHOTLINE_GATE_ON=gate_on,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE, queue], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    state: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return state


def test_warm_up_loads_the_gate_and_store_and_freezes_them_out_of_the_gc(tmp_path: Path) -> None:
    state = _warm(tmp_path, "cpu", "cpu")
    assert state["gate"] and state["store"] == "LocalBlobStore"
    # The loaded models and libraries are long-lived: the collector no longer walks them.
    assert isinstance(state["frozen"], int) and state["frozen"] > 100_000


def test_gating_on_the_gpu_host_loads_clip_beside_the_model(tmp_path: Path) -> None:
    state = _warm(tmp_path, "gpu.tiny", "gpu")
    assert state["gate"] and state["generators"] == ["tiny"]
    # The cpu queue then gates only fallbacks: it loads CLIP lazily, not in every child.
    assert _warm(tmp_path, "cpu", "gpu")["gate"] is False
