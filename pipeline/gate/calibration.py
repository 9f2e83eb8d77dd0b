"""``shotline calibrate``: the threshold per concept that reaches a target precision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from pipeline.gate.policy import GateError, GatePolicy, ScoreSet
from pipeline.gate.scores import ClipFilter


def threshold_for_precision(
    positives: Sequence[float], negatives: Sequence[float], target: float
) -> dict[str, Any]:
    """The lowest threshold (most recall) at which ``score >= threshold`` reaches ``target``
    precision on the labelled scores. ``threshold`` is None when no threshold reaches it."""
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    best: dict[str, Any] = {
        "threshold": None,
        "precision": None,
        "recall": 0.0,
        "tp": 0,
        "fp": 0,
        "reached": False,
    }
    best_precision = 0.0
    for t in np.unique(pos):  # ascending: the first that reaches the target has most recall
        tp = int(np.sum(pos >= t))
        fp = int(np.sum(neg >= t))
        precision = tp / (tp + fp)
        best_precision = max(best_precision, precision)
        if precision >= target:
            return {
                "threshold": float(t),
                "precision": precision,
                "recall": tp / len(pos),
                "tp": tp,
                "fp": fp,
                "reached": True,
            }
    best["best_precision"] = best_precision
    return best


def calibrate(
    flt: ClipFilter,
    policy: GatePolicy,
    positives: Mapping[str, Sequence[Image.Image]],
    negatives: Sequence[Image.Image],
    precision: float = 0.95,
) -> list[dict[str, Any]]:
    """Per concept, the threshold that reaches ``precision`` on labelled examples.

    ``positives`` maps a concept name (a safety concept or a competitor) to images that
    show it; ``negatives`` are clean images. Competitor scores use the crop grid, like the gate.
    """
    neg_scores = flt.score(list(negatives), [""] * len(negatives), policy) if negatives else []
    out = []
    for name, images in positives.items():
        kind, idx = _concept_index(policy, name)
        pos_scores = flt.score(list(images), [""] * len(images), policy) if images else []
        pos = [_concept_score(s, kind, idx) for s in pos_scores]
        neg = [_concept_score(s, kind, idx) for s in neg_scores]
        current = policy.safety[idx].threshold if kind == "safety" else policy.competitor_threshold
        res = (
            threshold_for_precision(pos, neg, precision)
            if pos
            else {"threshold": None, "reached": False}
        )
        out.append(
            {
                "concept": name,
                "kind": kind,
                "current_threshold": current,
                "n_positives": len(pos),
                "n_negatives": len(neg),
                "target": precision,
                **res,
            }
        )
    return out


def _concept_index(policy: GatePolicy, name: str) -> tuple[str, int]:
    key = name.casefold()
    for i, c in enumerate(policy.safety):
        if c.name.casefold() == key:
            return "safety", i
    for i, comp in enumerate(policy.competitors):
        if comp.name.casefold() == key:
            return "competitor", i
    known = [c.name for c in policy.safety] + [c.name for c in policy.competitors]
    raise GateError(f"unknown concept {name!r} for brand {policy.brand!r}; known: {known}")


def _concept_score(s: ScoreSet, kind: str, idx: int) -> float:
    return float(s.safety[idx] if kind == "safety" else s.competitor[idx])
