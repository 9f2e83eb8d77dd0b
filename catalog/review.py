"""Review state changes: reviewers approve or reject gated shots.

Every decision is an append-only ``review_events`` row; the shot's ``state`` column is
only a cache of what the events say (``current_review_state``). Rules:

- every event names who decided: the authenticated identity of the connection (the Postgres
  session user, the OS login on SQLite) and the name claimed with ``--reviewer``, which must be
  the same person unless free names are allowed (``review_free_names``, the demo);
- a brand lists who may approve (``reviewers:`` in its config); anyone else is refused;
- a transition is atomic: of two reviewers deciding on one shot at once, one wins and the
  other gets "already approved by X" (a compare-and-set on the shot's state);
- ``pending_review -> approved`` (action ``approve``) and ``pending_review -> rejected``
  (action ``reject``, a reason is required);
- approving a *rejected* shot (the gate rejected it, or a reviewer did earlier) needs
  ``override=True`` plus a reason, and is recorded as action ``override``;
- an approved shot that is not published yet may still be rejected;
- unknown ids and any other state raise ``ReviewError`` naming the id, and nothing of
  the batch is written (all ids are checked before the first event is added).
"""

from __future__ import annotations

import csv
import getpass
import io
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, selectinload

from catalog.embeddings import near_duplicates
from catalog.models import (
    Brand,
    Product,
    ProductRevision,
    ReviewAction,
    ReviewEvent,
    Shot,
    ShotState,
    utcnow,
)
from catalog.shots import can_transition, lineage_loads

# The states a reviewer looks at; ``review list`` without --status shows pending ones.
REVIEW_STATES = (
    ShotState.pending_review.value,
    ShotState.rejected.value,
    ShotState.approved.value,
    ShotState.published.value,
)

# Spreadsheet apps evaluate cells starting with these (OWASP "CSV injection").
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ReviewError(ValueError):
    """A review action that cannot be applied (unknown id, wrong state, missing reviewer)."""


def current_review_state(events: Iterable[Any]) -> str | None:
    """The review state the events say: ``approved``, ``rejected`` or None (no decision yet).

    Events are applied in order; the last decision wins. Accepts ORM rows or mappings with
    an ``action`` key, so it also works on exported/JSON events.
    """
    state: str | None = None
    for event in events:
        action = event["action"] if isinstance(event, Mapping) else event.action
        if action in (ReviewAction.approve.value, ReviewAction.override.value):
            state = ShotState.approved.value
        elif action == ReviewAction.reject.value:
            state = ShotState.rejected.value
    return state


MAX_REVIEWER_CHARS = 200  # review_events.reviewer is VARCHAR(200)


@dataclass(frozen=True)
class Reviewer:
    """Who decides: the name recorded on the event and the identity the connection proved."""

    name: str
    authenticated: str


def clean_reviewer_name(raw: str | None) -> str | None:
    """A reviewer name as typed, checked: printable, trimmed, bounded; None when not given.

    Control and format characters (newlines, ESC, zero-width and bidi marks) are refused, not
    stripped: a name made of them would be an anonymous approval by another name, and one
    with a newline forges output lines wherever it is printed later.
    """
    if raw is None:
        return None
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        return None
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ReviewError(f"reviewer name contains the control character U+{ord(bad):04X}")
    if len(name) > MAX_REVIEWER_CHARS:
        raise ReviewError(f"reviewer name is longer than {MAX_REVIEWER_CHARS} characters")
    return name


def connection_identity(session: Session) -> str:
    """Who this connection is: the Postgres session user (the login that authenticated), or
    the OS login running the process on SQLite, where the file's permissions are the gate."""
    if session.get_bind().dialect.name == "postgresql":
        return str(session.execute(text("SELECT session_user")).scalar_one())
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a bare container uid)
        return f"uid:{os.getuid()}"


def resolve_reviewer(session: Session, claimed: str | None, *, free_names: bool) -> Reviewer:
    """The reviewer of this session: the claimed name if allowed, else the authenticated one."""
    authenticated = connection_identity(session)
    name = clean_reviewer_name(claimed)
    if name is None:
        return Reviewer(authenticated, authenticated)
    if not free_names and name.casefold() != authenticated.casefold():
        raise ReviewError(
            f"--reviewer {name!r} is not the authenticated user {authenticated!r}; review as "
            "yourself (or set SHOTLINE_REVIEW_FREE_NAMES=true where free names are allowed)"
        )
    return Reviewer(name, authenticated)


def _authorize(session: Session, shots: Sequence[Shot], reviewer: Reviewer) -> None:
    """Every shot's brand must list the reviewer; refuse before anything is written."""
    brand_ids = {s.brand_id for s in shots}
    brands = session.scalars(select(Brand).where(Brand.id.in_(brand_ids))).all()
    for brand in brands:
        allowed = [str(r) for r in (brand.config or {}).get("reviewers") or []]
        if reviewer.name.casefold() not in {a.casefold() for a in allowed}:
            who = ", ".join(allowed) if allowed else "nobody (no reviewers: in its config)"
            raise ReviewError(
                f"{reviewer.name!r} may not review brand {brand.name!r}; its reviewers: {who}"
            )


def _load_for_update(session: Session, shot_ids: Sequence[int]) -> list[Shot]:
    """The shots in the given order, row-locked on Postgres so two reviewers serialize."""
    if not shot_ids:
        raise ReviewError("no shot ids given")
    ids = list(dict.fromkeys(int(i) for i in shot_ids))
    rows = session.scalars(
        select(Shot)
        .where(Shot.id.in_(ids))
        .options(selectinload(Shot.filter_result))
        .with_for_update(of=Shot)
    ).all()
    by_id = {s.id: s for s in rows}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ReviewError(f"shot {missing[0]}: no such shot")
    return [by_id[i] for i in ids]


def _gate_reasons(shot: Shot) -> str:
    fr = shot.filter_result
    if fr is not None and fr.decision == ShotState.rejected.value:
        reasons = ", ".join(str(r) for r in fr.reasons or []) or "no reason recorded"
        return f"the gate rejected it ({reasons})"
    return "it was rejected in review"


def approve(
    session: Session,
    shot_ids: Sequence[int],
    reviewer: Reviewer,
    note: str | None = None,
    override: bool = False,
) -> list[ReviewEvent]:
    """Approve shots; returns the events added. Raises ``ReviewError`` before writing anything."""
    note = (note or "").strip() or None
    shots = _load_for_update(session, shot_ids)
    _authorize(session, shots, reviewer)
    actions: list[str] = []
    for shot in shots:
        if shot.state == ShotState.pending_review.value:
            actions.append(ReviewAction.approve.value)
        elif shot.state == ShotState.rejected.value:
            if not override:
                raise ReviewError(
                    f"shot {shot.id}: {_gate_reasons(shot)}; approving it needs "
                    "--override --reason TEXT"
                )
            if note is None:
                raise ReviewError(f"shot {shot.id}: an override needs --reason TEXT")
            actions.append(ReviewAction.override.value)
        else:
            raise ReviewError(_wrong_state(session, shot, "approve"))
    return _append_events(session, shots, actions, reviewer, note, ShotState.approved)


def reject(
    session: Session, shot_ids: Sequence[int], reviewer: Reviewer, reason: str | None
) -> list[ReviewEvent]:
    """Reject shots awaiting review (or approved but not yet published). A reason is required."""
    why = (reason or "").strip()
    if not why:
        raise ReviewError("rejecting needs --reason TEXT")
    shots = _load_for_update(session, shot_ids)
    _authorize(session, shots, reviewer)
    allowed = (ShotState.pending_review.value, ShotState.approved.value)
    for shot in shots:
        if shot.state not in allowed:
            raise ReviewError(_wrong_state(session, shot, "reject"))
    actions = [ReviewAction.reject.value] * len(shots)
    return _append_events(session, shots, actions, reviewer, why, ShotState.rejected)


def _wrong_state(session: Session, shot: Shot, verb: str) -> str:
    """Why ``verb`` can't apply, naming who decided last when a reviewer did."""
    last = session.scalars(
        select(ReviewEvent)
        .where(ReviewEvent.shot_id == shot.id)
        .order_by(ReviewEvent.id.desc())
        .limit(1)
    ).first()
    if last is not None and shot.state in (ShotState.approved.value, ShotState.rejected.value):
        done = "approved" if last.action != ReviewAction.reject.value else "rejected"
        return f"shot {shot.id}: already {done} by {last.reviewer!r}"
    if verb == "approve":
        allowed = "only pending_review, or rejected with --override"
    else:
        allowed = "only pending_review or approved-not-yet-published"
    return f"shot {shot.id}: cannot {verb} a shot in state {shot.state!r} ({allowed})"


def _append_events(
    session: Session,
    shots: Sequence[Shot],
    actions: Sequence[str],
    reviewer: Reviewer,
    note: str | None,
    new_state: ShotState,
) -> list[ReviewEvent]:
    """Every check passed: move each shot by compare-and-set, then append its event.

    The UPDATE names the state the checks saw, so a concurrent decision that committed in
    between (SQLite has no row locks) matches no row: this one then fails whole, and the
    transaction rolls back. On Postgres the row locks already serialize the two.
    """
    events = []
    for shot, action in zip(shots, actions, strict=True):
        seen = shot.state
        if not can_transition(seen, new_state):  # pragma: no cover - checked by the callers
            raise ReviewError(_wrong_state(session, shot, "review"))
        moved = session.execute(
            update(Shot)
            .where(Shot.id == shot.id, Shot.state == seen)
            .values(state=str(new_state), error=None, updated_at=utcnow())
            # The loaded shot is updated in place: no second SELECT per shot.
            .execution_options(synchronize_session="evaluate")
        )
        if getattr(moved, "rowcount", 0) != 1:  # a CursorResult for an UPDATE
            session.refresh(shot)  # what the concurrent decision left
            raise ReviewError(_wrong_state(session, shot, "review"))
        event = ReviewEvent(
            shot_id=shot.id,
            reviewer=reviewer.name,
            authenticated_reviewer=reviewer.authenticated,
            action=action,
            note=note,
        )
        session.add(event)
        events.append(event)
    session.flush()
    return events


def list_shots(
    session: Session,
    brand: str | None = None,
    status: str | Sequence[str] | None = None,
    import_run: int | None = None,
    template: str | None = None,
    limit: int | None = None,
) -> list[Shot]:
    """Shots for the review list/sheet/export, oldest first, with their lineage rows loaded.

    ``status`` is one state or several; None means every review state (pending_review,
    rejected, approved, published). ``import_run`` selects shots of products whose
    revision that run created.
    """
    statuses = [status] if isinstance(status, str) else list(status or REVIEW_STATES)
    query = (
        select(Shot)
        .join(ProductRevision, Shot.product_revision_id == ProductRevision.id)
        .where(Shot.state.in_(statuses))
        .options(*lineage_loads())
        .order_by(Shot.id)
    )
    if brand is not None:
        query = query.join(Brand, Shot.brand_id == Brand.id).where(Brand.name == brand)
    if import_run is not None:
        query = query.where(ProductRevision.import_run_id == import_run)
    if template is not None:
        query = query.where(Shot.template_name == template)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query).all())


def pending_ids(session: Session, **filters: Any) -> list[int]:
    """Ids of the shots awaiting review that match ``list_shots`` filters (``--all-pending``)."""
    filters["status"] = ShotState.pending_review.value
    return [s.id for s in list_shots(session, **filters)]


def review_shot(session: Session, shot_id: int) -> Shot | None:
    """One shot for ``review show`` (its rows load on access), or None if there is none."""
    return session.get(Shot, shot_id)


def shot_sku(shot: Shot) -> str:
    """The variant sku when the shot has one, else the product key (as blob keys use)."""
    variant = shot.variant if isinstance(shot.variant, Mapping) else {}
    product: Product = shot.product_revision.product
    return str(variant.get("sku") or product.sku)


def key_scores(shot: Shot, n: int = 3) -> list[dict[str, Any]]:
    """The scores a reviewer needs first: triggered ones, then those closest to their threshold."""
    fr = shot.filter_result
    if fr is None:
        return []

    def margin(s: Mapping[str, Any]) -> float:
        try:
            return abs(float(s.get("score", 0.0)) - float(s.get("threshold", 0.0)))
        except (TypeError, ValueError):
            return float("inf")

    scores = [s for s in fr.scores or [] if isinstance(s, Mapping)]
    scores.sort(key=lambda s: (not s.get("triggered", False), margin(s)))
    return [dict(s) for s in scores[:n]]


def event_json(event: ReviewEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "reviewer": event.reviewer,
        "action": event.action,
        "note": event.note,
        "at": _iso(event.created_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def near_duplicate_flags(
    session: Session, shots: Sequence[Shot], threshold: float
) -> dict[int, dict[str, Any]]:
    """``{shot_id: {"shot_id": other, "cosine": c, "note": "near-duplicate of shot N (0.98)"}}``
    for the shots whose image embedding is within ``threshold`` cosine of another shot of the
    same product. Computed on read (``catalog.embeddings.near_duplicates``), not stored: a
    shot generated later flags the earlier one too, and a changed threshold applies at once."""
    flags = near_duplicates(session, [shot.id for shot in shots], threshold)
    return {
        sid: {
            "shot_id": f.other_shot_id,
            "cosine": round(f.cosine, 4),
            "note": f"near-duplicate of shot {f.other_shot_id} ({f.cosine:.2f})",
        }
        for sid, f in flags.items()
    }


def review_record(shot: Shot, near_duplicate: dict[str, Any] | None = None) -> dict[str, Any]:
    """One shot as the review commands show it (JSON-able); ``near_duplicate`` is its entry
    from ``near_duplicate_flags``."""
    fr = shot.filter_result
    last = shot.review_events[-1] if shot.review_events else None
    return {
        "id": shot.id,
        "sku": shot_sku(shot),
        "template": shot.template_name,
        "state": shot.state,
        "review_state": current_review_state(shot.review_events),
        "prompt": shot.prompt,
        "negative_prompt": shot.negative_prompt,
        "gate_decision": fr.decision if fr is not None else None,
        "reasons": list(fr.reasons or []) if fr is not None else [],
        "scores": list(fr.scores or []) if fr is not None else [],
        "key_scores": key_scores(shot),
        "reviewer": last.reviewer if last is not None else None,
        "review_action": last.action if last is not None else None,
        "review_note": last.note if last is not None else None,
        "reviewed_at": _iso(last.created_at) if last is not None else None,
        "events": [event_json(e) for e in shot.review_events],
        "image_key": shot.watermark.image_key if shot.watermark is not None else None,
        "asset_key": shot.asset.key if shot.asset is not None else None,
        "near_duplicate": near_duplicate,
    }


# --- export ---------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "shot_id",
    "sku",
    "template",
    "state",
    "gate_decision",
    "gate_reasons",
    "review_action",
    "reviewer",
    "review_note",
    "reviewed_at",
    "prompt",
    "asset_key",
)


def escape_formula(value: Any) -> Any:
    """Neutralize spreadsheet formulas: text starting with = + - @ TAB or CR gets a ``'``.

    Only text is escaped; numbers (ids, scores) stay numbers.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def export_rows(shots: Iterable[Shot]) -> list[dict[str, Any]]:
    rows = []
    for shot in shots:
        rec = review_record(shot)
        row = {
            "shot_id": rec["id"],
            "sku": rec["sku"],
            "template": rec["template"],
            "state": rec["state"],
            "gate_decision": rec["gate_decision"] or "",
            "gate_reasons": "; ".join(str(r) for r in rec["reasons"]),
            "review_action": rec["review_action"] or "",
            "reviewer": rec["reviewer"] or "",
            "review_note": rec["review_note"] or "",
            "reviewed_at": rec["reviewed_at"] or "",
            "prompt": rec["prompt"],
            "asset_key": rec["asset_key"] or "",
        }
        rows.append({k: escape_formula(v) for k, v in row.items()})
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def decisions_csv(shots: Iterable[Shot]) -> str:
    """The review decisions as CSV text (one row per shot), formula-escaped."""
    return _csv_text(export_rows(shots))


def write_decisions_csv(shots: Iterable[Shot], path: Path) -> int:
    """Write the decisions to ``path`` (UTF-8 with BOM so spreadsheets detect the encoding)."""
    rows = export_rows(shots)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_csv_text(rows), encoding="utf-8-sig")
    return len(rows)
