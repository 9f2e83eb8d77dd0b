"""A worker process loads what it needs once, before its first task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json
from pipeline.settings import Settings
from tasks.context import context_for
from tasks.signals import warm_up
settings = Settings()
warm_up(settings, queues=["cpu"])
ctx = context_for(settings)
print(json.dumps({
    "gate": ctx._gate is not None,
    "store": type(ctx._store).__name__,
    "frozen": gc.get_freeze_count(),
}))
"""


def test_warm_up_loads_the_gate_and_store_and_freezes_them_out_of_the_gc(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
    env.update(
        SHOTLINE_VAR_DIR=str(tmp_path / "var"),
        SHOTLINE_MODEL_CACHE_DIR=str(ROOT / "var" / "models"),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state["gate"] and state["store"] == "LocalBlobStore"
    # The loaded models and libraries are long-lived: the collector no longer walks them.
    assert state["frozen"] > 100_000
