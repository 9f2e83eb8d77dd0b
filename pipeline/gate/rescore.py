"""Re-deciding stored scores under a changed policy, without the encoder (pure).

A policy version is ``brand:vN:<concepts>.<thresholds>``. Scores made under the same
concepts digest and the same CLIP model are still the right numbers: only where the cut
falls moved, so ``redecide`` rebuilds the ``ScoreSet`` from the stored rows and runs the same
``decide`` as the gate. Anything else (new concept, edited prompt, new logo, other CLIP
model, a version from before the split) needs the image encoded again.

What a changed decision does to a shot (``outcome``), chosen so a rescore never undoes a
human's decision or a publication silently:

- ``pending_review`` that now fails -> ``rejected`` (the new reasons are on the new row);
- ``rejected`` that now passes stays rejected and is reported (``now_passes``): a reviewer
  can override it with ``review approve``;
- ``approved`` / ``published`` that now fail keep their state and are reported
  (``attention``): unpublishing is a human's call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.gate.policy import (
    GatePolicy,
    ScoreSet,
    concepts_digest_of,
    decide,
    open_nsfw_check,
    with_checks,
)
from pipeline.types import FilterDecision

UNCHANGED, REJECTED, NOW_PASSES, ATTENTION = "unchanged", "rejected", "now_passes", "attention"


def can_redecide(
    stored_version: str, stored_clip_model: str, policy: GatePolicy, clip_model: str
) -> bool:
    """True when the stored scores are valid under ``policy``: same concepts and model."""
    digest = concepts_digest_of(stored_version)
    return (
        digest is not None
        and digest == policy.concepts_digest
        and (stored_clip_model == clip_model)
    )


def scores_from_rows(rows: Sequence[Mapping[str, Any]], policy: GatePolicy) -> ScoreSet | None:
    """The ``ScoreSet`` the stored rows were decided from, aligned with ``policy``'s concept
    lists; None when a concept of the policy has no stored score."""
    by_key = {(str(r.get("kind")), str(r.get("name"))): r for r in rows}

    def score(kind: str, name: str) -> Mapping[str, Any] | None:
        return by_key.get((kind, name))

    safety = [score("safety", c.name) for c in policy.safety]
    comp = [score("competitor", c.name) for c in policy.competitors]
    logo = [score("logo", c.name) if c.logos else {} for c in policy.competitors]
    product = score("product_match", "product")
    if product is None or any(r is None for r in (*safety, *comp, *logo)):
        return None

    def values(rs: Sequence[Mapping[str, Any] | None], key: str, empty: float) -> np.ndarray:
        return np.asarray([float((r or {}).get(key, empty)) for r in rs], dtype=np.float64)

    return ScoreSet(
        safety=values(safety, "score", np.nan),
        competitor=values(comp, "score", np.nan),
        competitor_crop=values(comp, "crop", 0).astype(np.int64),
        logo=values(logo, "score", np.nan),
        logo_crop=values(logo, "crop", 0).astype(np.int64),
        product=float(product["score"]),
    )


def redecide(
    rows: Sequence[Mapping[str, Any]], policy: GatePolicy, clip_model: str
) -> FilterDecision | None:
    """The decision ``policy`` makes on stored scores, or None when they do not line up."""
    scores = scores_from_rows(rows, policy)
    if scores is None:
        return None
    decision = decide(scores, policy, clip_model)
    if policy.open_nsfw_threshold is None:
        return decision
    # The Open-NSFW score is re-cut at the new threshold; without a stored one, encode again.
    row = next((r for r in rows if (r.get("kind"), r.get("name")) == ("safety", "open_nsfw")), None)
    if row is None:
        return None
    return with_checks(decision, *open_nsfw_check(float(row["score"]), policy.open_nsfw_threshold))


def outcome(state: str, new_decision: str) -> str:
    """What a rescore's decision means for a shot in ``state`` (see the module doc)."""
    fails = new_decision == "rejected"
    if state == "pending_review":
        return REJECTED if fails else UNCHANGED
    if state == "rejected":
        return UNCHANGED if fails else NOW_PASSES
    if state in ("approved", "published"):
        return ATTENTION if fails else UNCHANGED
    return UNCHANGED


def with_carried_checks(
    decision: FilterDecision,
    previous_scores: Sequence[Mapping[str, Any]],
    previous_reasons: Sequence[str],
) -> FilterDecision:
    """``decision`` plus the checks a CLIP pass doesn't redo, carried from the previous pass:
    packshot fidelity (product pixels exact, PSNR), their scores and reasons, and a rejection
    when one of them triggered. A rescore never clears a product that failed fidelity."""
    carried = [
        dict(r) for r in previous_scores if isinstance(r, Mapping) and r.get("kind") == "fidelity"
    ]
    if not carried:
        return decision
    reasons = [str(r) for r in previous_reasons if str(r).startswith("product fidelity")]
    if any(r.get("triggered") for r in carried) and not reasons:
        reasons = ["product fidelity: failed on the previous pass"]
    return with_checks(decision, carried, reasons)
