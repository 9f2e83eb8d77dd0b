"""Score: the gate's CLIP checks, in one ``Gate.check`` batch per brand under that brand's
policy (from the device pixels where the generator still holds them: the GPU host), decided
by ``pipeline.gate.policy``. The packshot fidelity checks need the final (watermarked) file,
so finalizing makes them and folds them into the same decision (``finalize.check_fidelity``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from PIL import Image

from catalog.shots import ShotInfo
from pipeline.failures import Failure, FailureKind
from pipeline.gate.policy import GateModelError
from pipeline.images import decode_image
from pipeline.types import FilterDecision, Gate, GateItem
from tasks.context import WorkerContext
from tasks.line.claim import GateClaim


def decide_by_brand(
    ctx: WorkerContext,
    the_gate: Gate,
    infos: Mapping[int, ShotInfo],
    brand_rows: Mapping[str, dict[str, Any]],
    images: Mapping[int, Image.Image],
    pixels: Mapping[int, Any] | None = None,
    refused: dict[int, Failure] | None = None,
) -> dict[int, FilterDecision]:
    """One ``Gate.check`` batch per brand, under that brand's policy. ``pixels`` are the
    images' device tensors where the generator still holds them (the GPU host).

    With ``refused``, a brand whose policy needs a model this host lacks (``GateModelError``)
    puts its shots there as ``model_load`` failures and the other brands are still decided;
    without it the error propagates (the GPU host hands the batch to the cpu queue)."""
    by_brand: dict[str, list[int]] = defaultdict(list)
    for sid in images:
        by_brand[infos[sid].brand].append(sid)
    decisions: dict[int, FilterDecision] = {}
    for brand, ids in by_brand.items():
        try:
            policy = the_gate.policy_for(ctx.brand_config(brand, brand_rows.get(brand)))
        except GateModelError as exc:
            if refused is None:
                raise
            refused.update((sid, Failure(FailureKind.model_load, str(exc))) for sid in ids)
            continue
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
