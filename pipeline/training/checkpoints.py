"""Training checkpoints in a BlobStore: tensors as safetensors, the rest as JSON, no pickle.

``torch.save`` is pickle, and a pickle can run code when it is loaded, so a checkpoint is
two blobs per step: ``step-NNNNNNNN.safetensors`` (adapter weights, optimizer moments, the
torch RNG state) and ``step-NNNNNNNN.json`` (step, losses, optimizer hyperparameters,
LR-scheduler state). ``manifest.json`` lists the kept steps, newest last, and is written
after both blobs, so a crash mid-write leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from pipeline.storage import BlobStore, StorageError, sanitize_part

MANIFEST = "manifest.json"


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, Any]  # name -> torch.Tensor
    state: dict[str, Any]  # JSON-able


def prefix_for(run: str) -> str:
    return f"training/{sanitize_part(run)}/checkpoints"


def _key(prefix: str, step: int, ext: str) -> str:
    return f"{prefix}/step-{step:08d}.{ext}"


def flatten_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer ``state_dict`` as (tensors, JSON): each tensor keyed ``opt.<param>.<name>``."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in opt_state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, extra in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


class CheckpointStore:
    """Checkpoints of one training run under ``training/<run>/checkpoints/``."""

    def __init__(self, blobs: BlobStore, run: str, keep: int = 3) -> None:
        self.blobs = blobs
        self.prefix = prefix_for(run)
        self.keep = max(1, keep)

    def steps(self) -> list[int]:
        key = f"{self.prefix}/{MANIFEST}"
        if not self.blobs.exists(key):
            return []
        data = json.loads(self.blobs.get(key))
        return [int(s) for s in data.get("steps", [])]

    def keys(self, step: int) -> tuple[str, str]:
        return _key(self.prefix, step, "safetensors"), _key(self.prefix, step, "json")

    def save(self, ckpt: Checkpoint) -> list[str]:
        """Write ``ckpt``, drop all but the newest ``keep``; return the kept blob keys."""
        from safetensors.torch import save

        tkey, jkey = self.keys(ckpt.step)
        self.blobs.put(tkey, save(ckpt.tensors), "application/octet-stream")
        self.blobs.put(jkey, json.dumps(ckpt.state, sort_keys=True).encode(), "application/json")
        steps = [s for s in self.steps() if s != ckpt.step] + [ckpt.step]
        kept, dropped = steps[-self.keep :], steps[: -self.keep]
        self.blobs.put(
            f"{self.prefix}/{MANIFEST}", json.dumps({"steps": kept}).encode(), "application/json"
        )
        for step in dropped:
            for key in self.keys(step):
                # A leftover old checkpoint costs space, not correctness.
                with contextlib.suppress(StorageError):
                    self.blobs.delete(key)
        return [k for s in kept for k in self.keys(s)]

    def latest(self) -> Checkpoint | None:
        from safetensors.torch import load

        steps = self.steps()
        if not steps:
            return None
        tkey, jkey = self.keys(steps[-1])
        return Checkpoint(steps[-1], load(self.blobs.get(tkey)), json.loads(self.blobs.get(jkey)))
