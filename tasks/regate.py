"""``shotline.regate_shots`` (``cpu`` queue): a rescore's re-encodes, off the CLI's process.

``shotline gate rescore`` re-decides from stored scores where only thresholds changed (no
image is read). Shots whose scores must be computed again (the concepts or the CLIP model
changed) are images that arrive without a GPU: their stored final files are encoded again by
this thin task on the ``cpu`` queue (in-process when embedded), ``cpu_batch_size`` shots a
message. Each pass is recorded as the CLI records one (``catalog.regate.record_pass``); a
redelivered message skips the shots already decided under the policy version it carries.
"""

from __future__ import annotations

from typing import Any

from catalog.db import Session
from catalog.embeddings import replace_embedding
from catalog.models import Shot
from catalog.regate import record_pass, rescore_candidates
from catalog.shots import shot_info, stored_brand_configs
from pipeline.gate.rescore import outcome, with_carried_checks
from pipeline.images import decode_image
from pipeline.settings import Settings
from pipeline.types import FilterDecision, GateItem
from tasks.celery_app import app, submit
from tasks.context import WorkerContext
from tasks.dispatch import ShotlineTask, chunks
from tasks.queues import QUEUE_CPU, TASK_REGATE

ENCODE_BATCH = 16  # final images decoded and encoded at a time: bounded memory

# shot id -> (the new decision, its ``outcome`` code)
Decisions = dict[int, tuple[FilterDecision, str]]


def encode_again(
    ctx: WorkerContext, s: Session, shots: list[Shot], policy: Any, on_shot: Any = None
) -> Decisions:
    """Score the stored final images of ``shots`` again under ``policy``, a batch at a
    time; shots without a final image are left out. ``on_shot()`` after each shot."""
    the_gate = ctx.gate()
    infos = shot_info(s, shots)
    decisions: Decisions = {}
    for i in range(0, len(shots), ENCODE_BATCH):
        part = [sh for sh in shots[i : i + ENCODE_BATCH] if sh.watermark is not None]
        keys = [sh.watermark.image_key for sh in part if sh.watermark is not None]
        raws = ctx.io_map(ctx.store.get, keys)
        items = [  # the bounded decoder: a stored blob is still bytes from a store
            GateItem(
                sh.id, decode_image(raw, f"shot {sh.id} final image"), infos[sh.id].product_text
            )
            for sh, raw in zip(part, raws, strict=True)
        ]
        for sh, dec in zip(part, the_gate.check(items, policy), strict=True):
            if sh.filter_result is not None:
                prev = sh.filter_result
                dec = with_carried_checks(dec, list(prev.scores or []), list(prev.reasons or []))
            decisions[sh.id] = (dec, outcome(sh.state, dec.decision))
        for _ in shots[i : i + ENCODE_BATCH]:
            if on_shot is not None:
                on_shot()
    return decisions


def record_decisions(ctx: WorkerContext, decisions: Decisions) -> int:
    """Each decision as its shot's new current pass (and embedding); how many were recorded."""
    recorded = 0
    with ctx.sessions.begin() as s:
        for sid, (dec, result) in decisions.items():
            if record_pass(s, sid, dec, result):
                recorded += 1
                if dec.embedding is not None:
                    replace_embedding(s, sid, dec.clip_model, dec.embedding)
    return recorded


@app.task(name=TASK_REGATE, base=ShotlineTask, bind=True)
def regate_shots(self: ShotlineTask, brand: str, shot_ids: list[int]) -> dict[str, int]:
    ctx = self.context
    with ctx.sessions() as s:
        cfg = ctx.brand_config(brand, stored_brand_configs(s, [brand]).get(brand), fresh=True)
        the_gate = ctx.gate()
        policy = the_gate.policy_for(cfg)
        version = getattr(policy, "version", None)
        clip_model = str(getattr(the_gate, "clip_model", ""))
        shots = [
            sh
            for sh in rescore_candidates(s, brand, shot_ids)
            if sh.filter_result is not None
            and (sh.filter_result.policy_version, sh.filter_result.clip_model)
            != (version, clip_model)
        ]
        decisions = encode_again(ctx, s, shots, policy)
    return {"shots": len(shot_ids), "recorded": record_decisions(ctx, decisions)}


def enqueue_regate(settings: Settings, brand: str, shot_ids: list[int]) -> int:
    """Re-encode messages of at most ``cpu_batch_size`` shots on the ``cpu`` queue (run
    in-process, before this returns, when embedded); returns the message count."""
    parts = list(chunks(shot_ids, settings.cpu_batch_size))
    for part in parts:
        submit(settings, regate_shots, [brand, part], QUEUE_CPU)
    return len(parts)
