"""Score: the gate's checks. CLIP in one ``Gate.check`` batch per brand, under that brand's
policy (from the device pixels where the generator still holds them: the GPU host), and for
packshot shots the product-fidelity checks, which join the same decision through
``pipeline.gate.policy.with_checks``: the policy module makes every decision.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from catalog.shots import ShotInfo
from pipeline.gate.policy import with_checks
from pipeline.images import ImageError, decode_image
from pipeline.packshot.stage import fidelity_scores
from pipeline.types import FilterDecision, Gate, GateItem
from tasks.context import WorkerContext
from tasks.line.claim import GateClaim

MISSING_PLACEMENT = "product fidelity: the placed source or its mask is missing from the store"


def decide_by_brand(
    ctx: WorkerContext,
    the_gate: Gate,
    infos: Mapping[int, ShotInfo],
    brand_rows: Mapping[str, dict[str, Any]],
    images: Mapping[int, Image.Image],
    pixels: Mapping[int, Any] | None = None,
) -> dict[int, FilterDecision]:
    """One ``Gate.check`` batch per brand, under that brand's policy. ``pixels`` are the
    images' device tensors where the generator still holds them (the GPU host)."""
    by_brand: dict[str, list[int]] = defaultdict(list)
    for sid in images:
        by_brand[infos[sid].brand].append(sid)
    decisions: dict[int, FilterDecision] = {}
    for brand, ids in by_brand.items():
        policy = the_gate.policy_for(ctx.brand_config(brand, brand_rows.get(brand)))
        items = [
            GateItem(sid, images[sid], infos[sid].product_text, (pixels or {}).get(sid))
            for sid in ids
        ]
        decisions.update(zip(ids, the_gate.check(items, policy), strict=True))
    return decisions


def load_raws(ctx: WorkerContext, claim: GateClaim) -> dict[int, Image.Image]:
    """The stored raw images of a cpu-queue gate message, through the bounded decoder (pixel
    cap, bomb check): a raw blob is ours, but the store is not."""
    ids = list(claim.shots)
    raws = ctx.io_map(lambda sid: ctx.store.get(claim.shots[sid].raw_key), ids)
    return {
        sid: decode_image(raw, f"shot {sid} raw image {claim.shots[sid].raw_key}")
        for sid, raw in zip(ids, raws, strict=True)
    }


@dataclass(frozen=True)
class Placement:
    """A packshot shot's placed product on its canvas: what fidelity compares against."""

    canvas: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray  # (H, W) uint8


def stored_placement(ctx: WorkerContext, keys: tuple[str | None, str | None]) -> Placement | None:
    """The placement the generate phase stored (the cpu queue's gate has no other copy)."""
    image_key, alpha_key = keys
    arrays = []
    for key, mode in ((image_key, "RGB"), (alpha_key, "L")):
        if not key:
            return None
        try:
            arrays.append(np.asarray(decode_image(ctx.store.get(key), mode=mode), np.uint8))
        except (FileNotFoundError, ImageError):
            return None
    return Placement(arrays[0], arrays[1])


def check_fidelity(
    the_gate: Gate,
    placements: Mapping[int, Placement | None],
    raws: Mapping[int, Image.Image],
    finals: Mapping[int, bytes],
    decisions: dict[int, FilterDecision],
) -> None:
    """Fold each packshot shot's fidelity scores into its decision (in place); a shot that
    fails is rejected with the reason. ``placements``: by packshot shot id (None: missing)."""
    for sid, placement in placements.items():
        if sid not in decisions or sid not in finals:
            continue
        if placement is None:
            decisions[sid] = with_checks(decisions[sid], [], [MISSING_PLACEMENT])
            continue
        scores, reasons = fidelity_scores(
            raws[sid], finals[sid], placement.canvas, placement.alpha, the_gate.image_encoder
        )
        decisions[sid] = with_checks(decisions[sid], scores, reasons)
