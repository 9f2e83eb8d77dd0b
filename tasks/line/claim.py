"""Claim: a phase's rows by id, in one short transaction, and what the later phases need.

Shots not in the state a phase expects are skipped: that is what makes a redelivered message
harmless. Rows are never held locked while a model runs; what leaves the transaction is typed
records, never ORM objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from catalog.models import Shot, ShotState
from catalog.shots import (
    ShotInfo,
    claim_shots,
    final_files,
    hand_back,
    mark_failed,
    raw_keys,
    shot_info,
    shot_params,
    shots_in_state,
    stored_brand_configs,
)
from pipeline.failures import FailureKind
from pipeline.packshot.records import PackshotPlan, PackshotRecord
from pipeline.storage import BlobInfo
from pipeline.types import HiresSpec, ProvenanceInfo, ShotParams
from tasks.context import WorkerContext
from tasks.line.results import LineResult

S = ShotState


@dataclass(frozen=True)
class PackshotShot:
    """What the prepare phase reads of a packshot shot, taken inside the claim (a fetch must
    never wait on the claim's locks)."""

    shot_id: int
    source_image_id: int
    plan: PackshotPlan
    width: int
    height: int
    # The output size when it differs from the model's (``shots.hires``); None: the same.
    output: tuple[int, int] | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        return self.output or (self.width, self.height)

    @classmethod
    def of(cls, shot: Shot) -> PackshotShot | None:
        if shot.source_image_id is None:
            return None
        hires = HiresSpec.from_json(shot.hires)
        return cls(
            shot.id,
            int(shot.source_image_id),
            PackshotPlan.from_json(shot.packshot),
            int(shot.width),
            int(shot.height),
            None if hires is None else (hires.width, hires.height),
        )


@dataclass(frozen=True)
class GenerateClaim:
    params: list[ShotParams]
    infos: dict[int, ShotInfo]
    packshots: dict[int, PackshotShot] = field(default_factory=dict)
    # What scoring and finalizing need: each shot's provenance, each brand row's config.
    provenance: dict[int, ProvenanceInfo] = field(default_factory=dict)
    brand_rows: dict[str, dict[str, Any]] = field(default_factory=dict)


def hand_back_all(shots: Sequence[Shot], reason: str, result: LineResult) -> None:
    """Back to ``planned`` for a retry one by one; the attempt this batch cost is refunded
    (splitting a batch is not the shot's fault, or not yet)."""
    for shot in shots:
        shot.attempts = max(0, shot.attempts - 1)
        hand_back(shot, reason)
        result.retry.append(shot.id)


def provenance_of(shot: Shot, info: ShotInfo) -> ProvenanceInfo:
    return ProvenanceInfo(
        shot_id=shot.id,
        model_id=shot.model_id,
        model_digest=shot.model_digest,
        loras=list(shot.adapters or []),
        brand=info.brand,
        sku=info.sku,
        template=info.template,
    )


def claim_for_generate(
    ctx: WorkerContext, shot_ids: list[int], first_delivery: bool, result: LineResult
) -> GenerateClaim:
    """planned (or abandoned generating) -> generating."""
    with ctx.sessions.begin() as s:
        claim = claim_shots(
            s, shot_ids, max_attempts=ctx.settings.max_attempts, count_attempt=first_delivery
        )
        result.failed += [shot.id for shot in claim.failed]
        if first_delivery and claim.redelivered and len(claim.claimed) > 1:
            # The worker died on this batch. If one shot kills workers, retrying the batch
            # would take its neighbours down again: retry each shot alone instead.
            hand_back_all(claim.claimed, "batch redelivered after a lost worker", result)
            return GenerateClaim([], {})
        params = [shot_params(shot) for shot in claim.claimed]
        infos = shot_info(s, claim.claimed)
        packshots = {p.shot_id: p for shot in claim.claimed if (p := PackshotShot.of(shot))}
        provenance = {sh.id: provenance_of(sh, infos[sh.id]) for sh in claim.claimed}
        brand_rows = stored_brand_configs(s, {info.brand for info in infos.values()})
    claimed = {p.shot_id for p in params}
    result.skipped += [i for i in shot_ids if i not in claimed and i not in result.failed]
    return GenerateClaim(params, infos, packshots, provenance, brand_rows)


@dataclass(frozen=True)
class GateShot:
    info: ShotInfo
    raw_key: str
    provenance: ProvenanceInfo
    is_packshot: bool = False
    packshot: PackshotRecord | None = None  # where its placement was stored, once it was


@dataclass(frozen=True)
class GateClaim:
    shots: dict[int, GateShot]
    brand_rows: dict[str, dict[str, Any]]  # the config stored on each brand row
    failed: list[int] = field(default_factory=list)  # generated without a stored raw


def claim_for_gate(ctx: WorkerContext, shot_ids: list[int]) -> GateClaim:
    """The ``generated`` shots of a cpu-queue gate message and their stored raw images."""
    with ctx.sessions.begin() as s:
        shots = {shot.id: shot for shot in shots_in_state(s, shot_ids, S.generated)}
        infos = shot_info(s, list(shots.values()))
        keys = raw_keys(s, infos)
        failed = [sid for sid in infos if sid not in keys]
        for sid in failed:  # nothing to gate: a generation whose raw PNG was not stored
            reason = "generated, but its raw image was not stored: cannot gate"
            mark_failed(shots[sid], reason, FailureKind.storage)
            del infos[sid]
        brand_rows = stored_brand_configs(s, {info.brand for info in infos.values()})
        gate_shots = {
            sid: GateShot(
                info,
                keys[sid],
                provenance_of(shots[sid], info),
                shots[sid].source_image_id is not None,
                PackshotRecord.from_json(shots[sid].packshot),
            )
            for sid, info in infos.items()
        }
    return GateClaim(gate_shots, brand_rows, failed)


@dataclass(frozen=True)
class PublishShot:
    info: ShotInfo
    final: BlobInfo | None  # the gated final file as recorded; None if it has none


def claim_for_publish(ctx: WorkerContext, shot_ids: list[int]) -> dict[int, PublishShot]:
    with ctx.sessions.begin() as s:
        infos = shot_info(s, shots_in_state(s, shot_ids, S.approved))
        finals = final_files(s, infos)
    return {sid: PublishShot(info, finals.get(sid)) for sid, info in infos.items()}
