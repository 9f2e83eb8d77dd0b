"""The shot state machine and the idempotent writes of each stage.

``planned → generating → generated → (rejected | pending_review) → approved → published``,
or ``failed`` with its reason and attempt count. Every ``record_*`` function is safe to call
twice: the unique constraints on ``generations``/``filter_results``/``watermarks``/``assets``
``.shot_id`` plus ``INSERT ... ON CONFLICT DO NOTHING`` mean a redelivered task never writes
a second row, even when two workers race on the same shot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from catalog.models import (
    Asset,
    Brand,
    FilterResult,
    Generation,
    Product,
    ProductRevision,
    Shot,
    ShotState,
    Watermark,
    utcnow,
)
from pipeline.failures import Failure, FailureKind
from pipeline.storage import BlobInfo
from pipeline.types import AdapterRef, HiresSpec, ShotParams

S = ShotState

# Which state may follow which. ``generating → generating`` is a redelivered batch re-claiming
# its shots; ``generating → planned`` hands a shot back (batch split, retryable error).
ALLOWED: dict[str, frozenset[str]] = {
    S.planned: frozenset({S.generating, S.failed}),
    S.generating: frozenset({S.generating, S.generated, S.planned, S.failed}),
    S.generated: frozenset({S.rejected, S.pending_review, S.failed}),
    S.pending_review: frozenset({S.approved, S.rejected}),
    S.rejected: frozenset({S.approved}),  # a reviewer override
    S.approved: frozenset({S.published, S.rejected, S.failed}),
    S.published: frozenset(),
    S.failed: frozenset({S.planned}),  # an operator retry
}


class InvalidTransition(ValueError):
    def __init__(self, shot_id: int, current: str, new: str) -> None:
        super().__init__(f"shot {shot_id}: cannot go from {str(current)!r} to {str(new)!r}")
        self.shot_id, self.current, self.new = shot_id, current, new


# Bound parameters per IN list: far under Postgres' 65,535 and SQLite's 32,766, whatever
# the caller passes (a --all-pending of 270,000 shots is 54 statements, not one refused one).
IN_CHUNK = 5000


def id_chunks(ids: Iterable[int], n: int = IN_CHUNK) -> Iterator[list[int]]:
    """``ids`` in lists of at most ``n``, order kept: one IN list per statement."""
    part: list[int] = []
    for i in ids:
        part.append(i)
        if len(part) >= n:
            yield part
            part = []
    if part:
        yield part


def can_transition(current: str, new: str) -> bool:
    return new in ALLOWED.get(current, frozenset())


def transition(
    shot: Shot, new: str, *, error: str | None = None, kind: FailureKind | str | None = None
) -> None:
    if not can_transition(shot.state, new):
        raise InvalidTransition(shot.id, shot.state, new)
    shot.state = str(new)
    shot.error = error
    shot.error_kind = str(kind) if error is not None and kind is not None else None
    shot.updated_at = utcnow()


def shot_params(shot: Shot) -> ShotParams:
    """What the generator needs for ``shot``; adapters keep their recorded sha256 pins."""
    return ShotParams(
        shot_id=shot.id,
        prompt=shot.prompt,
        negative_prompt=shot.negative_prompt or "",
        seed=int(shot.seed),
        model_id=shot.model_id,
        width=int(shot.width),
        height=int(shot.height),
        steps=int(shot.steps),
        guidance=float(shot.guidance),
        scheduler=shot.scheduler,
        adapters=tuple(AdapterRef.from_json(a) for a in (shot.adapters or [])),
        hires=HiresSpec.from_json(shot.hires),
    )


@dataclass(frozen=True)
class ShotInfo:
    """The names a shot's blob keys and provenance are built from."""

    shot_id: int
    brand: str
    sku: str  # the variant SKU when it has one, else the product key (handle)
    product_key: str
    template: str
    title: str
    product_text: str


def shot_info(session: Session, shots: Sequence[Shot]) -> dict[int, ShotInfo]:
    """Brand name, SKU/handle, template and product text for each shot, in one query."""
    if not shots:
        return {}
    rows = session.execute(
        select(Shot.id, Brand.name, Product.sku, ProductRevision.data)
        .join(Brand, Brand.id == Shot.brand_id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .where(Shot.id.in_([s.id for s in shots]))
    ).all()
    by_id = {s.id: s for s in shots}
    out: dict[int, ShotInfo] = {}
    for shot_id, brand, product_key, data in rows:
        shot = by_id[shot_id]
        variant = shot.variant or {}
        data = data or {}
        title = str(data.get("title") or product_key)
        options = variant.get("options") or {}
        text = " ".join([title, *(str(v) for v in options.values() if v)])
        out[shot_id] = ShotInfo(
            shot_id=shot_id,
            brand=brand,
            sku=str(variant.get("sku") or product_key),
            product_key=product_key,
            template=shot.template_name,
            title=title,
            product_text=text,
        )
    return out


def _locking(session: Session, stmt: Select[Any], skip_locked: bool) -> Select[Any]:
    # SQLite has one writer at a time anyway; Postgres gets row locks.
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=skip_locked)
    return stmt


def lock_shots(
    session: Session, ids: Iterable[int], states: Iterable[str], *, skip_locked: bool = False
) -> list[Shot]:
    """The shots among ``ids`` in one of ``states``, row-locked on Postgres (in id order, so
    two writers never deadlock). ``skip_locked`` passes over rows another worker holds."""
    ids = list(ids)
    if not ids:
        return []
    stmt = select(Shot).where(Shot.id.in_(ids), Shot.state.in_([str(s) for s in states]))
    return list(session.scalars(_locking(session, stmt.order_by(Shot.id), skip_locked)))


def shots_in_state(session: Session, ids: Iterable[int], state: str) -> list[Shot]:
    """The shots among ``ids`` that are in ``state`` (no locks: a read before a stage runs)."""
    return list(session.scalars(select(Shot).where(Shot.id.in_(list(ids)), Shot.state == state)))


def raw_keys(session: Session, shot_ids: Iterable[int]) -> dict[int, str]:
    """The store key of each shot's raw generation, for the shots that have one (a shot
    gated on the GPU host without ``store_raw`` records "": it has none)."""
    rows = session.execute(
        select(Generation.shot_id, Generation.blob_key).where(
            Generation.shot_id.in_(list(shot_ids)), Generation.blob_key != ""
        )
    )
    return {shot_id: key for shot_id, key in rows}


def final_files(session: Session, shot_ids: Iterable[int]) -> dict[int, BlobInfo]:
    """The gated final file of each shot that has one, as recorded on its ``watermarks`` row."""
    marks = session.scalars(select(Watermark).where(Watermark.shot_id.in_(list(shot_ids))))
    return {
        w.shot_id: BlobInfo(
            w.image_backend, None, w.image_key, w.image_sha256, w.image_size, None, w.content_type
        )
        for w in marks
    }


def stored_brand_configs(session: Session, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The brand config stored on each named brand row (the fallback for a missing YAML)."""
    rows = session.execute(select(Brand.name, Brand.config).where(Brand.name.in_(list(names))))
    return {name: config for name, config in rows}


@dataclass
class Claim:
    claimed: list[Shot]
    failed: list[Shot]  # gave up: the worker was lost on them too often
    # Claimed again while still ``generating``: the last worker on them was lost.
    redelivered: list[Shot] = field(default_factory=list)


def claim_shots(
    session: Session, ids: Iterable[int], *, max_attempts: int = 3, count_attempt: bool = True
) -> Claim:
    """Move ``planned`` (or abandoned ``generating``) shots to ``generating``.

    ``count_attempt`` is False for a Celery retry after a transient error: only first
    deliveries and redeliveries (a lost worker) count towards ``max_attempts``, so a
    shot that kills its worker every time ends up ``failed`` instead of looping.
    """
    claim = Claim([], [])
    # SKIP LOCKED: a shot another worker is claiming right now is theirs, not ours.
    for shot in lock_shots(session, ids, (S.planned, S.generating), skip_locked=True):
        if count_attempt:
            if shot.attempts >= max_attempts:
                reason = shot.error or "worker lost while generating"
                # The last error's kind where it was one; else the worker was lost on it.
                kind = shot.error_kind or FailureKind.worker_lost
                mark_failed(shot, f"gave up after {shot.attempts} attempts: {reason}", kind)
                claim.failed.append(shot)
                continue
            shot.attempts += 1
        if shot.state == S.generating:
            claim.redelivered.append(shot)
        transition(shot, S.generating, error=shot.error, kind=shot.error_kind)
        claim.claimed.append(shot)
    session.flush()
    return claim


def mark_failed(shot: Shot, reason: str, kind: FailureKind | str = FailureKind.internal) -> None:
    """``failed`` with its reason and kind; allowed from any non-terminal state."""
    shot.state = S.failed.value
    shot.error = reason[:4000]
    shot.error_kind = str(kind)
    shot.updated_at = utcnow()


def retry_or_fail(shot: Shot, failure: Failure, *, max_attempts: int) -> bool:
    """After an error on ``shot``: back to ``planned`` (True) or ``failed`` when out of attempts."""
    if shot.attempts >= max_attempts:
        reason = f"failed after {shot.attempts} attempts: {failure.reason}"
        mark_failed(shot, reason, failure.kind)
        return False
    transition(shot, S.planned, error=failure.reason[:4000], kind=failure.kind)
    return True


def hand_back(shot: Shot, reason: str) -> None:
    """Back to ``planned`` with ``reason``, whatever its attempts: the shot is not at fault
    (its batch was split, or redelivered after a lost worker), so it never fails here."""
    transition(shot, S.planned, error=reason[:4000], kind=None)


_BUFFER = "shotline_insert_buffer"


def _insert_stmt(session: Session, model: type[Any]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database {dialect}")  # pragma: no cover


def _insert_ignore(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: the unique shot_id makes a second write a no-op.

    Inside ``batched_inserts`` the rows are buffered and sent as one multi-row statement.
    """
    buffer = session.info.get(_BUFFER)
    if buffer is not None:
        buffer.setdefault(model, []).append(values)
        return
    session.execute(_insert_stmt(session, model).values(**values))


def flush_inserts(session: Session) -> None:
    buffer: dict[type[Any], list[dict[str, Any]]] = session.info.get(_BUFFER) or {}
    for model, rows in list(buffer.items()):
        if rows:
            session.execute(_insert_stmt(session, model), rows)
        buffer[model] = []


@contextmanager
def batched_inserts(session: Session) -> Iterator[None]:
    """Buffer the ``record_*`` inserts of a whole batch into one statement per table."""
    session.info[_BUFFER] = {}
    try:
        yield
        flush_inserts(session)
    finally:
        session.info.pop(_BUFFER, None)


def record_generation(
    session: Session,
    shot: Shot,
    *,
    blob_backend: str,
    blob_key: str,
    sha256: str,
    size_bytes: int,
    model_digest: str | None,
    timings: dict[str, Any],
    device: str,
    library_versions: dict[str, Any],
    batch_id: str | None,
) -> bool:
    """Write the ``generations`` row and move to ``generated``. False if already done."""
    if shot.state != S.generating:
        return False
    _insert_ignore(
        session,
        Generation,
        {
            "shot_id": shot.id,
            "blob_backend": blob_backend,
            "blob_key": blob_key,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "model_digest": model_digest,
            "timings": timings,
            "device": device[:200],
            "library_versions": library_versions,
            "batch_id": batch_id,
            "created_at": utcnow(),
        },
    )
    if model_digest and not shot.model_digest:
        shot.model_digest = model_digest
    transition(shot, S.generated)
    return True


def record_gate(
    session: Session,
    shot: Shot,
    *,
    decision: str,
    policy_version: str,
    clip_model: str,
    scores: list[dict[str, Any]],
    reasons: list[str],
    watermark: dict[str, Any] | None,
) -> bool:
    """Write ``filter_results`` (+ ``watermarks`` for a kept image) and move to the decision.

    ``watermark`` holds the Watermark columns (method, payload, verified, bit_accuracy,
    image_backend, image_key, image_sha256, image_size, content_type, c2pa_signed).
    """
    if shot.state != S.generated:
        return False
    if decision not in (S.rejected, S.pending_review):
        raise ValueError(f"shot {shot.id}: unknown gate decision {decision!r}")
    if decision == S.pending_review and watermark is None:
        raise ValueError(f"shot {shot.id}: a kept image needs its watermark")
    now = utcnow()
    _insert_ignore(
        session,
        FilterResult,
        {
            "shot_id": shot.id,
            "policy_version": policy_version,
            "clip_model": clip_model[:200],
            "scores": scores,
            "decision": decision,
            "reasons": reasons,
            "created_at": now,
        },
    )
    if watermark is not None:
        _insert_ignore(session, Watermark, {"shot_id": shot.id, "created_at": now, **watermark})
    transition(shot, decision)
    return True


def record_assets(session: Session, uploads: Sequence[tuple[Shot, BlobInfo]]) -> list[int]:
    """Write the ``assets`` rows (after the uploads succeeded; each ``BlobInfo`` is what the
    store returned for the published key) in one statement and move the shots to
    ``published``. Returns the ids that were not published: a shot no longer
    ``approved`` (already done) or one whose bytes another shot already published."""
    pending = [(shot, up) for shot, up in uploads if shot.state == S.approved]
    not_published = [shot.id for shot, up in uploads if shot.state != S.approved]
    if not pending:
        return not_published
    now = utcnow()
    rows = [
        {
            "shot_id": shot.id,
            "backend": up.backend,
            "bucket": up.bucket,
            "key": up.key,
            "sha256": up.sha256,
            "size_bytes": up.size,
            "etag": up.etag,
            "content_type": up.content_type,
            "published_at": now,
        }
        for shot, up in pending
    ]
    stmt = _insert_stmt(session, Asset).returning(Asset.shot_id)
    # One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING: the rows that went in.
    inserted = set(session.scalars(stmt.values(rows)))
    for shot, up in pending:
        owner: int | None = shot.id if shot.id in inserted else None
        if owner is None:  # a conflict: already ours (redelivery), or another shot's bytes
            owner = session.scalar(select(Asset.shot_id).where(Asset.key == up.key))
        if owner is None and session.scalar(select(Asset.id).where(Asset.shot_id == shot.id)):
            owner = shot.id  # published earlier under another key (e.g. a changed prefix)
        if owner != shot.id:
            # Byte-identical output of another shot: the key is content-addressed and taken.
            reason = f"identical image already published as shot {owner} at {up.key}"
            mark_failed(shot, reason, FailureKind.duplicate)
            not_published.append(shot.id)
            continue
        transition(shot, S.published)
    return not_published


def lineage_loads() -> tuple[Any, ...]:
    """Loader options that fetch a shot's whole chain in a few queries (no N+1 in lists)."""
    return (
        selectinload(Shot.product_revision).selectinload(ProductRevision.product),
        selectinload(Shot.generation),
        selectinload(Shot.filter_result),
        selectinload(Shot.watermark),
        selectinload(Shot.asset),
        selectinload(Shot.review_events),
    )
