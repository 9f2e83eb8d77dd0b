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
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import Table, and_, func, insert, select, text, update
from sqlalchemy.orm import Session

from catalog.delivery.current import (
    CURRENT,
    RECALLED,
    first_recalls,
    superseded_clause,
)
from catalog.embeddings import near_duplicates
from catalog.models import (
    Asset,
    Brand,
    FilterResult,
    Product,
    ProductRevision,
    ReviewAction,
    ReviewEvent,
    Shot,
    ShotState,
    Watermark,
    utcnow,
)
from catalog.shots import can_transition, id_chunks, lineage_loads
from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import brand_cache
from pipeline.delivery.urls import public_url

# The states a reviewer looks at; ``review list`` without --status shows pending ones.
REVIEW_STATES = (
    ShotState.pending_review.value,
    ShotState.rejected.value,
    ShotState.approved.value,
    ShotState.published.value,
)

# Shots per keyset page of the column reads (``iter_records``, ``export_rows``): one page is
# held in memory (column tuples, no ORM rows, so a page of 2,000 costs little).
COLUMN_PAGE_ROWS = 2000
EVENT_CHUNK = 1000  # review events per INSERT batch
EVENTS = cast(Table, ReviewEvent.__table__)

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


def brand_reviewers(brand: Brand, brands_dir: Path | None = None) -> list[str]:
    """Who may review ``brand``: the ``reviewers:`` of its YAML in ``brands_dir`` as the file
    says now (the YAML is the source: an edit takes effect at the next decision, not at the
    next ``plan``), else the config stored on the row when there is no file.

    A file that exists but does not load refuses the review (``ReviewError``): the last plan's
    list may name someone the edit removed.
    """
    if brands_dir is not None:
        for ext in (".yaml", ".yml"):
            path = brands_dir / f"{brand.name}{ext}"
            if path.is_file():
                try:
                    # Parsed again only when the file changed (a stat per decision).
                    return [str(r) for r in brand_cache.load(path).reviewers]
                except BrandConfigError as exc:
                    raise ReviewError(
                        f"brand {brand.name!r}: its config does not load, so who may review "
                        f"it is unknown: {exc}"
                    ) from None
    return [str(r) for r in (brand.config or {}).get("reviewers") or []]


def _authorize(
    session: Session, brand_ids: Iterable[int], reviewer: Reviewer, brands_dir: Path | None
) -> None:
    """Every brand must list the reviewer; refuse before anything is written."""
    wanted = set(brand_ids)
    if not wanted:
        return
    brands = session.scalars(select(Brand).where(Brand.id.in_(wanted)).order_by(Brand.id)).all()
    for brand in brands:
        allowed = brand_reviewers(brand, brands_dir)
        if reviewer.name.casefold() not in {a.casefold() for a in allowed}:
            who = ", ".join(allowed) if allowed else "nobody (no reviewers: in its config)"
            raise ReviewError(
                f"{reviewer.name!r} may not review brand {brand.name!r}; its reviewers: {who}"
            )


def _lock_states(session: Session, shot_ids: Sequence[int]) -> tuple[list[int], dict[int, Any]]:
    """The distinct ids in the given order and each one's (state, brand_id), row-locked on
    Postgres so two reviewers serialize. Plain columns, a chunk of ids per statement, in id
    order (two overlapping batches lock in the same order: no deadlock)."""
    if not shot_ids:
        raise ReviewError("no shot ids given")
    ids = list(dict.fromkeys(int(i) for i in shot_ids))
    found: dict[int, Any] = {}
    for part in id_chunks(sorted(ids)):
        rows = session.execute(
            select(Shot.id, Shot.state, Shot.brand_id)
            .where(Shot.id.in_(part))
            .order_by(Shot.id)
            .with_for_update()
        )
        found.update({sid: (state, brand_id) for sid, state, brand_id in rows})
    missing = next((i for i in ids if i not in found), None)
    if missing is not None:
        raise ReviewError(f"shot {missing}: no such shot")
    return ids, found


def _gate_reasons(session: Session, shot_id: int) -> str:
    fr = session.scalar(
        select(FilterResult).where(FilterResult.shot_id == shot_id, FilterResult.current)
    )
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
    brands_dir: Path | None = None,
) -> list[ReviewEvent]:
    """Approve shots; returns the events added. Raises ``ReviewError`` before writing anything.

    ``brands_dir``: where the brands' YAML lives (who may review is read from it, see
    ``brand_reviewers``); None uses the configs stored at the last plan."""
    note = (note or "").strip() or None
    ids, found = _lock_states(session, shot_ids)
    _authorize(session, {b for _, b in found.values()}, reviewer, brands_dir)
    actions: dict[int, str] = {}
    for sid in ids:
        state = found[sid][0]
        if state == ShotState.pending_review.value:
            actions[sid] = ReviewAction.approve.value
        elif state == ShotState.rejected.value:
            if not override:
                raise ReviewError(
                    f"shot {sid}: {_gate_reasons(session, sid)}; approving it needs "
                    "--override --reason TEXT"
                )
            if note is None:
                raise ReviewError(f"shot {sid}: an override needs --reason TEXT")
            actions[sid] = ReviewAction.override.value
        else:
            raise ReviewError(_wrong_state(session, sid, state, "approve"))
    seen = {sid: found[sid][0] for sid in ids}
    return _append_events(session, seen, actions, reviewer, note, ShotState.approved)


def reject(
    session: Session,
    shot_ids: Sequence[int],
    reviewer: Reviewer,
    reason: str | None,
    brands_dir: Path | None = None,
) -> list[ReviewEvent]:
    """Reject shots awaiting review (or approved but not yet published). A reason is required."""
    why = _reason(reason)
    ids, found = _lock_states(session, shot_ids)
    _authorize(session, {b for _, b in found.values()}, reviewer, brands_dir)
    allowed = (ShotState.pending_review.value, ShotState.approved.value)
    for sid in ids:
        if found[sid][0] not in allowed:
            raise ReviewError(_wrong_state(session, sid, found[sid][0], "reject"))
    seen = {sid: found[sid][0] for sid in ids}
    actions = dict.fromkeys(ids, ReviewAction.reject.value)
    return _append_events(session, seen, actions, reviewer, why, ShotState.rejected)


def _reason(reason: str | None) -> str:
    why = (reason or "").strip()
    if not why:
        raise ReviewError("rejecting needs --reason TEXT")
    return why


def _wrong_state(session: Session, shot_id: int, state: str, verb: str) -> str:
    """Why ``verb`` can't apply, naming who decided last when a reviewer did."""
    last = session.scalars(
        select(ReviewEvent)
        .where(ReviewEvent.shot_id == shot_id)
        .order_by(ReviewEvent.id.desc())
        .limit(1)
    ).first()
    # A race loser usually finds the winner's approval already published (in-process
    # publishing is quick): name the winner then too, not the state.
    decided = (ShotState.approved.value, ShotState.rejected.value, ShotState.published.value)
    if last is not None and state in decided:
        done = "approved" if last.action != ReviewAction.reject.value else "rejected"
        tail = " (and published)" if state == ShotState.published.value else ""
        return f"shot {shot_id}: already {done} by {last.reviewer!r}{tail}"
    if verb == "approve":
        allowed = "only pending_review, or rejected with --override"
    else:
        allowed = "only pending_review or approved-not-yet-published"
    return f"shot {shot_id}: cannot {verb} a shot in state {state!r} ({allowed})"


def _move(session: Session, shot_ids: Sequence[int], seen: str, new_state: ShotState) -> set[int]:
    """Compare-and-set ``seen -> new_state`` on ``shot_ids``, a chunk per UPDATE; the ids moved.

    Shots loaded in the session get the new state from the RETURNING ids ("fetch"), without
    re-evaluating every loaded shot on each statement ("evaluate" was quadratic)."""
    moved: set[int] = set()
    for part in id_chunks(shot_ids):
        moved.update(
            session.scalars(
                update(Shot)
                .where(Shot.id.in_(part), Shot.state == seen)
                .values(state=str(new_state), error=None, updated_at=utcnow())
                .returning(Shot.id)
                .execution_options(synchronize_session="fetch")
            )
        )
    return moved


def _append_events(
    session: Session,
    seen: Mapping[int, str],
    actions: Mapping[int, str],
    reviewer: Reviewer,
    note: str | None,
    new_state: ShotState,
) -> list[ReviewEvent]:
    """Every check passed: move the shots by compare-and-set, then append their events.

    The UPDATEs name the state the checks saw, so a concurrent decision that committed in
    between (SQLite has no row locks) matches no row: this batch then fails whole (its
    savepoint rolls back). On Postgres the row locks already serialize the two.
    """
    by_state: dict[str, list[int]] = defaultdict(list)
    for sid, state in seen.items():
        if not can_transition(state, new_state):  # pragma: no cover - checked by the callers
            raise ReviewError(_wrong_state(session, sid, state, "review"))
        by_state[state].append(sid)
    now = utcnow()
    events: list[ReviewEvent] = []
    with session.begin_nested():
        for state, ids in by_state.items():
            moved = _move(session, ids, state, new_state)
            lost = next((i for i in ids if i not in moved), None)
            if lost is not None:  # what the concurrent decision left
                current = session.scalar(select(Shot.state).where(Shot.id == lost))
                raise ReviewError(_wrong_state(session, lost, str(current), "review"))
        rows = [
            {
                "shot_id": sid,
                "reviewer": reviewer.name,
                "authenticated_reviewer": reviewer.authenticated,
                "action": actions[sid],
                "note": note,
                "created_at": now,
            }
            for sid in seen
        ]
        for i in range(0, len(rows), EVENT_CHUNK):
            events += session.scalars(
                insert(ReviewEvent).returning(ReviewEvent, sort_by_parameter_order=True),
                rows[i : i + EVENT_CHUNK],
            ).all()
    return events


def _filters(
    brand: str | None = None, import_run: int | None = None, template: str | None = None
) -> list[Any]:
    """The list filters as WHERE clauses on ``shots`` alone (subqueries, no joins), so the same
    clauses serve a SELECT, a keyset page and a set-based UPDATE."""
    where: list[Any] = []
    if brand is not None:
        where.append(Shot.brand_id.in_(select(Brand.id).where(Brand.name == brand)))
    if import_run is not None:
        revisions = select(ProductRevision.id).where(ProductRevision.import_run_id == import_run)
        where.append(Shot.product_revision_id.in_(revisions))
    if template is not None:
        where.append(Shot.template_name == template)
    return where


def decide_pending(
    session: Session,
    reviewer: Reviewer,
    *,
    rejecting: bool = False,
    note: str | None = None,
    brands_dir: Path | None = None,
    **filters: Any,
) -> list[int]:
    """``--all-pending``: approve (or, ``rejecting``, reject with the reason ``note``) every
    shot awaiting review that matches the ``list_shots`` filters, set-based: one UPDATE ...
    RETURNING moves them and their events are inserted in batches. Returns the shot ids
    decided, ascending.

    The UPDATE re-checks ``pending_review`` row by row, so a shot another reviewer decides
    meanwhile is left to that decision (no second event), and only brands the reviewer was
    checked against are touched."""
    why = _reason(note) if rejecting else (note or "").strip() or None
    pending = ShotState.pending_review.value
    where = [Shot.state == pending, *_filters(**filters)]
    brand_ids = list(session.scalars(select(Shot.brand_id).where(*where).distinct()))
    if not brand_ids:
        return []
    _authorize(session, brand_ids, reviewer, brands_dir)
    new_state = ShotState.rejected if rejecting else ShotState.approved
    action = ReviewAction.reject.value if rejecting else ReviewAction.approve.value
    ids = sorted(
        session.scalars(
            update(Shot)
            .where(*where, Shot.brand_id.in_(brand_ids))
            .values(state=str(new_state), error=None, updated_at=utcnow())
            .returning(Shot.id)
            .execution_options(synchronize_session="fetch")
        )
    )
    now = utcnow()
    for part in id_chunks(ids, EVENT_CHUNK):
        session.execute(
            insert(EVENTS),  # Core executemany: no ORM objects to build
            [
                {
                    "shot_id": sid,
                    "reviewer": reviewer.name,
                    "authenticated_reviewer": reviewer.authenticated,
                    "action": action,
                    "note": why,
                    "created_at": now,
                }
                for sid in part
            ],
        )
    return ids


# Not a shot state: published shots whose asset a newer product revision replaced
# (``catalog.delivery.current``); ``review list --status superseded`` lists them.
SUPERSEDED = "superseded"


def _list_query(
    statuses: Sequence[str],
    filters: Mapping[str, Any],
    after: int | None,
    loads: bool,
) -> Any:
    query = select(Shot).where(Shot.state.in_(statuses), *_filters(**filters)).order_by(Shot.id)
    if SUPERSEDED in statuses:
        query = (
            select(Shot)
            .join(Asset, Asset.shot_id == Shot.id)
            .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
            .join(Product, Product.id == ProductRevision.product_id)
            .where(superseded_clause(), *_filters(**filters))
            .order_by(Shot.id)
        )
    if after is not None:
        query = query.where(Shot.id > after)  # keyset: the next page starts past the last id
    if not loads:
        return query
    return query.options(*lineage_loads())


def _statuses(status: str | Sequence[str] | None) -> list[str]:
    return [status] if isinstance(status, str) else list(status or REVIEW_STATES)


def list_shots(
    session: Session,
    brand: str | None = None,
    status: str | Sequence[str] | None = None,
    import_run: int | None = None,
    template: str | None = None,
    limit: int | None = None,
    after: int | None = None,
) -> list[Shot]:
    """Shots for the review list and sheet, oldest first, with their lineage rows loaded.

    ``status`` is one state or several; None means every review state (pending_review,
    rejected, approved, published). ``import_run`` selects shots of products whose
    revision that run created. ``after`` starts past that shot id (keyset paging); for every
    row of a large catalog use ``iter_records``, which holds one page at a time.
    """
    filters = {"brand": brand, "import_run": import_run, "template": template}
    query = _list_query(_statuses(status), filters, after, loads=True)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query).all())


def pending_ids(session: Session, **filters: Any) -> list[int]:
    """Ids of the shots awaiting review that match ``list_shots`` filters (``--all-pending``):
    ids only, no rows loaded."""
    statuses = [ShotState.pending_review.value]
    query = _list_query(statuses, filters, None, loads=False).with_only_columns(Shot.id)
    return list(session.scalars(query))


def review_shot(session: Session, shot_id: int) -> Shot | None:
    """One shot for ``review show`` (its rows load on access), or None if there is none."""
    return session.get(Shot, shot_id)


def variant_sku(variant: Any, product_sku: str) -> str:
    """The variant sku when the shot's ``variant`` names one, else the product key (as blob
    keys use): ``shot_sku`` on a loaded shot, the export on its columns."""
    named = variant.get("sku") if isinstance(variant, Mapping) else None
    return str(named or product_sku)


def shot_sku(shot: Shot) -> str:
    product: Product = shot.product_revision.product
    return variant_sku(shot.variant, product.sku)


def key_scores(shot: Shot, n: int = 3) -> list[dict[str, Any]]:
    """The scores a reviewer needs first: triggered ones, then those closest to their threshold."""
    fr = shot.filter_result
    return top_scores(fr.scores, n) if fr is not None else []


def top_scores(scores: Any, n: int = 3) -> list[dict[str, Any]]:
    """``key_scores`` on a gate decision's ``scores`` value (a shot's or a column's)."""

    def margin(s: Mapping[str, Any]) -> float:
        try:
            return abs(float(s.get("score", 0.0)) - float(s.get("threshold", 0.0)))
        except (TypeError, ValueError):
            return float("inf")

    kept = [s for s in scores or [] if isinstance(s, Mapping)]
    kept.sort(key=lambda s: (not s.get("triggered", False), margin(s)))
    return [dict(s) for s in kept[:n]]


def event_json(event: Any) -> dict[str, Any]:
    """One review event as JSON: a ``ReviewEvent`` or a row of its columns (same names)."""
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
    return near_duplicate_flags_of(session, [shot.id for shot in shots], threshold)


def near_duplicate_flags_of(
    session: Session, shot_ids: Sequence[int], threshold: float
) -> dict[int, dict[str, Any]]:
    """``near_duplicate_flags`` by shot id (no rows loaded)."""
    flags = near_duplicates(session, shot_ids, threshold)
    return {
        sid: {
            "shot_id": f.other_shot_id,
            "cosine": round(f.cosine, 4),
            "note": f"near-duplicate of shot {f.other_shot_id} ({f.cosine:.2f})",
        }
        for sid, f in flags.items()
    }


@dataclass(frozen=True)
class _Gate:
    """A shot's current gate decision as values (None fields: no decision)."""

    decision: str | None
    reasons: Any
    scores: Any


def _record(
    shot: Any,
    sku: str,
    gate: _Gate | None,
    events: Sequence[Any],
    keys: tuple[str | None, str | None],
    near_duplicate: dict[str, Any] | None,
) -> dict[str, Any]:
    """A review record from values: ``shot`` has the shot's columns as attributes (a ``Shot``
    or a row), ``events`` its review events in id order, ``keys`` (image key, asset key).
    ``review_record`` and ``iter_records`` both build through here."""
    last = events[-1] if events else None
    return {
        "id": shot.id,
        "sku": sku,
        "template": shot.template_name,
        "state": shot.state,
        "review_state": current_review_state(events),
        "prompt": shot.prompt,
        "negative_prompt": shot.negative_prompt,
        "gate_decision": gate.decision if gate is not None else None,
        "reasons": list(gate.reasons or []) if gate is not None else [],
        "scores": list(gate.scores or []) if gate is not None else [],
        "key_scores": top_scores(gate.scores) if gate is not None else [],
        "reviewer": last.reviewer if last is not None else None,
        "review_action": last.action if last is not None else None,
        "review_note": last.note if last is not None else None,
        "reviewed_at": _iso(last.created_at) if last is not None else None,
        "events": [event_json(e) for e in events],
        "image_key": keys[0],
        "asset_key": keys[1],
        "near_duplicate": near_duplicate,
    }


def review_record(shot: Shot, near_duplicate: dict[str, Any] | None = None) -> dict[str, Any]:
    """One shot as the review commands show it (JSON-able); ``near_duplicate`` is its entry
    from ``near_duplicate_flags``."""
    fr = shot.filter_result
    gate = _Gate(fr.decision, fr.reasons, fr.scores) if fr is not None else None
    keys = (
        shot.watermark.image_key if shot.watermark is not None else None,
        shot.asset.key if shot.asset is not None else None,
    )
    return _record(shot, shot_sku(shot), gate, shot.review_events, keys, near_duplicate)


# --- review list: records streamed from columns -------------------------------------------


def _record_query(ids: Any) -> Any:
    """One page of review-record columns (no ORM objects): the shots the ``ids`` query
    selects (a CTE, so no id list is sent), each with its product's sku, current gate
    decision, watermark and asset: one row per shot, id order."""
    page = ids.cte("record_page")
    return (
        _page_columns(
            page,
            Shot.id,
            Shot.template_name,
            Shot.state,
            Shot.prompt,
            Shot.negative_prompt,
            Shot.variant,
            Product.sku.label("product_sku"),
            FilterResult.id.label("gate_id"),
            FilterResult.decision,
            FilterResult.reasons,
            FilterResult.scores,
            Watermark.image_key,
            Asset.key.label("asset_key"),
        )
        .outerjoin(Watermark, Watermark.shot_id == Shot.id)
        .order_by(Shot.id)
    )


def _page_columns(page: Any, *columns: Any) -> Any:
    """``columns`` of the shots in ``page`` (a CTE of ids), joined to their product, their
    current gate decision and their asset (both outer): the part the review list's and the
    export's column pages share."""
    return (
        select(*columns)
        .join(page, page.c.id == Shot.id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .outerjoin(FilterResult, and_(FilterResult.shot_id == Shot.id, FilterResult.current))
        .outerjoin(Asset, Asset.shot_id == Shot.id)
    )


def _column_pages(
    session: Session,
    status: str | Sequence[str] | None,
    filters: Mapping[str, Any],
    query_for: Callable[[Any], Any],
    page: int,
    after: int | None = None,
) -> Iterator[Sequence[Any]]:
    """The rows of ``query_for(ids)`` a keyset page at a time, ``ids`` selecting the next
    ``page`` shots ``list_shots`` would list (same filters, id order) past ``after``."""
    statuses = _statuses(status)
    while True:
        ids = _list_query(statuses, filters, after, loads=False).with_only_columns(Shot.id)
        rows = session.execute(query_for(ids.limit(page))).all()
        if not rows:
            return
        yield rows
        if len(rows) < page:
            return
        after = rows[-1].id


def _page_events(session: Session, shot_ids: Sequence[int]) -> dict[int, list[Any]]:
    """The review events of a page's shots as column rows, each shot's in id order (the
    order of ``Shot.review_events``); the ids are one bounded page."""
    events: dict[int, list[Any]] = defaultdict(list)
    cols = (
        ReviewEvent.id,
        ReviewEvent.reviewer,
        ReviewEvent.action,
        ReviewEvent.note,
        ReviewEvent.created_at,
    )
    for part in id_chunks(shot_ids):
        rows = session.execute(
            select(ReviewEvent.shot_id, *cols)
            .where(ReviewEvent.shot_id.in_(part))
            .order_by(ReviewEvent.shot_id, ReviewEvent.id)
        )
        for row in rows:
            events[row.shot_id].append(row)
    return events


def iter_records(
    session: Session,
    brand: str | None = None,
    status: str | Sequence[str] | None = None,
    import_run: int | None = None,
    template: str | None = None,
    after: int | None = None,
    page: int = COLUMN_PAGE_ROWS,
    near_duplicate_threshold: float | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The ``review_record`` of every shot ``list_shots`` selects (same filters, oldest
    first), a keyset page of ``page`` at a time, read as columns: one query for the page's
    shots, one for their events (and the near-duplicate check when a threshold is given);
    memory holds one page."""
    filters = {"brand": brand, "import_run": import_run, "template": template}
    for rows in _column_pages(session, status, filters, _record_query, page, after):
        shot_ids = [r.id for r in rows]
        events = _page_events(session, shot_ids)
        dups: dict[int, dict[str, Any]] = {}
        if near_duplicate_threshold is not None:
            dups = near_duplicate_flags_of(session, shot_ids, near_duplicate_threshold)
        yield [
            _record(
                r,
                variant_sku(r.variant, r.product_sku),
                _Gate(r.decision, r.reasons, r.scores) if r.gate_id is not None else None,
                events.get(r.id, []),
                (r.image_key, r.asset_key),
                dups.get(r.id),
            )
            for r in rows
        ]


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
    # Delivery: the Shopify handle, the visual variant, whether the asset is the current one
    # (current | superseded | recalled; empty when unpublished), its public URL.
    "handle",
    "variant_key",
    "variant_options",
    "asset_status",
    "public_url",
)


def escape_formula(value: Any) -> Any:
    """Neutralize spreadsheet formulas: text starting with = + - @ TAB or CR gets a ``'``.

    Only text is escaped; numbers (ids, scores) stay numbers.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _asset_status(
    asset_id: int | None, revision_id: int, current_id: int | None, recalled: set[int]
) -> str:
    if asset_id is None:
        return ""
    if asset_id in recalled:
        return RECALLED
    return SUPERSEDED if current_id not in (None, revision_id) else CURRENT


def _export_query(ids: Any) -> Any:
    """One page of export rows as plain columns, no ORM objects to build: the shots whose ids
    the ``ids`` query selects, each with its product, current gate decision, asset and latest
    review event (the highest id, as ``review_record`` reads it): one row per shot. The
    latest events come from an aggregate over the page's ids (index lookups), not a
    correlated join, which Postgres would answer by hashing every event once per page."""
    page = ids.cte("export_page")
    last = (
        select(ReviewEvent.shot_id, func.max(ReviewEvent.id).label("event_id"))
        .where(ReviewEvent.shot_id.in_(select(page.c.id)))
        .group_by(ReviewEvent.shot_id)
        .subquery("last_event")
    )
    return (
        _page_columns(
            page,
            Shot.id,
            Shot.template_name,
            Shot.state,
            Shot.prompt,
            Shot.variant,
            Shot.variant_key,
            Shot.product_revision_id,
            Product.sku.label("product_sku"),
            Product.current_revision_id,
            FilterResult.decision,
            FilterResult.reasons,
            Asset.id.label("asset_id"),
            Asset.key.label("asset_key"),
            ReviewEvent.reviewer,
            ReviewEvent.action,
            ReviewEvent.note,
            ReviewEvent.created_at.label("reviewed_at"),
        )
        .outerjoin(last, last.c.shot_id == Shot.id)
        .outerjoin(ReviewEvent, ReviewEvent.id == last.c.event_id)
        .order_by(Shot.id)
    )


def _export_row(r: Any, recalled: set[int], base_url: str | None) -> list[Any]:
    """One shot's export row (``EXPORT_COLUMNS`` order) from its ``_export_query`` columns,
    formula-escaped."""
    variant = r.variant if isinstance(r.variant, Mapping) else {}
    options = variant.get("options") if isinstance(variant.get("options"), Mapping) else {}
    key = r.asset_key
    row = (
        r.id,
        variant_sku(variant, r.product_sku),
        r.template_name,
        r.state,
        r.decision or "",
        "; ".join(str(x) for x in r.reasons or []),
        r.action or "",
        r.reviewer or "",
        r.note or "",
        _iso(r.reviewed_at) or "",
        r.prompt,
        key or "",
        r.product_sku,  # the handle
        r.variant_key,
        "; ".join(f"{k}={v}" for k, v in (options or {}).items()),
        _asset_status(r.asset_id, r.product_revision_id, r.current_revision_id, recalled),
        public_url(base_url, key) if key and base_url else "",
    )
    return [escape_formula(v) for v in row]


def export_rows(
    session: Session,
    brand: str | None = None,
    status: str | Sequence[str] | None = None,
    import_run: int | None = None,
    template: str | None = None,
    base_url: str | None = None,
    page: int = COLUMN_PAGE_ROWS,
) -> Iterator[list[Any]]:
    """The export rows (lists in ``EXPORT_COLUMNS`` order) of the shots ``list_shots``
    selects (same filters, oldest first), a keyset page of ``page`` shots at a time: one
    query per page (the page's ids a CTE, so no id list is sent) plus one for which of its
    assets are recalled; memory holds one page. ``base_url``: ``SHOTLINE_PUBLIC_BASE_URL``
    (checked), for the URL."""
    filters = {"brand": brand, "import_run": import_run, "template": template}
    for rows in _column_pages(session, status, filters, _export_query, page):
        assets = [r.asset_id for r in rows if r.asset_id is not None]
        recalled = set(first_recalls(session, assets)) if assets else set()
        for r in rows:
            yield _export_row(r, recalled, base_url)


def _write_csv(rows: Iterable[list[Any]], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


def decisions_csv(session: Session, base_url: str | None = None, **filters: Any) -> str:
    """The review decisions as CSV text (one row per shot, ``export_rows`` filters),
    formula-escaped."""
    buf = io.StringIO()
    _write_csv(export_rows(session, base_url=base_url, **filters), buf)
    return buf.getvalue()


def write_decisions_csv(
    session: Session, path: Path, base_url: str | None = None, **filters: Any
) -> int:
    """Write the decisions to ``path`` (UTF-8 with BOM so spreadsheets detect the encoding),
    each row as its page arrives: memory stays one page. Returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        return _write_csv(export_rows(session, base_url=base_url, **filters), fh)


# --- web review: the browser's queue ------------------------------------------------------

QUEUE_FLAGS = ("near_duplicate", "override_needed")
QUEUE_PAGE_MAX = 200


@dataclass(frozen=True)
class QueuePage:
    """One keyset page of the review queue: the cards, and the id the next page starts past
    (None on the last page)."""

    records: list[dict[str, Any]]
    next_after: int | None
    read_at: str  # when the page was read (ISO, UTC): live updates ask for changes since


def card_flags(record: Mapping[str, Any]) -> list[str]:
    """The flags a card shows: a near-duplicate, or a shot only an override can approve."""
    flags = []
    if record.get("near_duplicate"):
        flags.append("near_duplicate")
    if record["state"] == ShotState.rejected.value and record.get("review_action") is None:
        flags.append("override_needed")
    return flags


def queue_page(
    session: Session,
    *,
    status: str | Sequence[str] | None = None,
    brand: str | None = None,
    import_run: int | None = None,
    template: str | None = None,
    flag: str | None = None,
    after: int | None = None,
    limit: int = 48,
    near_duplicate_threshold: float = 0.97,
) -> QueuePage:
    """The queue as the browser pages it: ``list_shots`` by keyset (id order, never OFFSET),
    each record with its flags. ``flag`` keeps the cards carrying it; the page then may hold
    fewer than ``limit`` cards, and ``next_after`` still moves past every shot read."""
    if flag is not None and flag not in QUEUE_FLAGS:
        raise ReviewError(f"flag {flag!r}: expected one of {', '.join(QUEUE_FLAGS)}")
    limit = max(1, min(limit, QUEUE_PAGE_MAX))
    read_at = utcnow().isoformat()
    shots = list_shots(
        session,
        brand=brand,
        status=status or ShotState.pending_review.value,
        import_run=import_run,
        template=template,
        limit=limit + 1,  # one more tells whether a next page exists
        after=after,
    )
    more = len(shots) > limit
    shots = shots[:limit]
    dups = near_duplicate_flags(session, shots, near_duplicate_threshold)
    groups = group_sizes(session, shots)
    records = []
    for shot in shots:
        rec = review_record(shot, dups.get(shot.id))
        rec["flags"] = card_flags(rec)
        rec["candidate"] = shot.candidate
        rec["group"], rec["group_size"] = groups[shot.id]
        rec["title"] = product_title(shot)
        if flag is None or flag in rec["flags"]:
            records.append(rec)
    return QueuePage(records, shots[-1].id if more and shots else None, read_at)


def shot_updates(
    session: Session, shot_ids: Sequence[int], since: datetime | None, limit: int = 200
) -> dict[str, Any]:
    """What changed for the live queue: the state and last decision of ``shot_ids`` (the cards
    on the page), and how many shots entered review since ``since`` (a running batch)."""
    out: list[dict[str, Any]] = []
    for part in id_chunks(sorted(set(shot_ids))[:QUEUE_PAGE_MAX]):
        for shot in session.scalars(select(Shot).where(Shot.id.in_(part)).order_by(Shot.id)):
            last = shot.review_events[-1] if shot.review_events else None
            out.append(
                {
                    "id": shot.id,
                    "state": shot.state,
                    "reviewer": last.reviewer if last is not None else None,
                    "action": last.action if last is not None else None,
                }
            )
    new = 0
    if since is not None:
        new = len(
            session.scalars(
                select(Shot.id)
                .where(Shot.state == ShotState.pending_review.value, Shot.updated_at > since)
                .limit(limit)
            ).all()
        )
    return {"shots": out, "new_pending": new}


def shot_image_keys(session: Session, shot_id: int) -> dict[str, str | None] | None:
    """The blob keys the review pages show for one shot: its image (the gated final file, else
    the raw generation), and for a packshot the catalog source and the cutout mask. None when
    there is no such shot."""
    shot = session.get(Shot, shot_id)
    if shot is None:
        return None
    final = shot.watermark.image_key if shot.watermark is not None else None
    raw = shot.generation.blob_key if shot.generation is not None else None
    cutout = (shot.packshot or {}).get("cutout") or {}
    source = shot.source_image.blob_key if shot.source_image is not None else None
    return {"image": final or raw or None, "source": source, "mask": cutout.get("mask_key")}


def product_title(shot: Shot) -> str:
    """The product's title as the catalog wrote it (shown as text, never as markup)."""
    data = shot.product_revision.data if isinstance(shot.product_revision.data, Mapping) else {}
    return str(data.get("title") or "")


# --- web review: pick 1 of N ---------------------------------------------------------------

NOT_PICKED = "not picked"


@dataclass(frozen=True)
class PickResult:
    picked: int
    rejected: list[int]  # the slot's other candidates this pick rejected
    group: list[int]  # every shot of the slot, candidate order


def _slot_where(shot: Shot) -> list[Any]:
    return [
        Shot.product_revision_id == shot.product_revision_id,
        Shot.variant_key == shot.variant_key,
        Shot.template_name == shot.template_name,
    ]


def candidate_group(session: Session, shot: Shot) -> list[dict[str, Any]]:
    """Every shot of ``shot``'s slot (its candidates), in candidate order: id, number, state."""
    rows = session.execute(
        select(Shot.id, Shot.candidate, Shot.state, Shot.seed)
        .where(*_slot_where(shot))
        .order_by(Shot.candidate, Shot.id)
    )
    return [{"id": i, "candidate": c, "state": st, "seed": sd} for i, c, st, sd in rows]


def group_sizes(session: Session, shots: Sequence[Shot]) -> dict[int, tuple[str, int]]:
    """``{shot_id: (group key, size)}`` for the shots of a page: the key names the slot
    (revision:variant:template) so the browser can find a card's fellow candidates."""
    revisions = sorted({s.product_revision_id for s in shots})
    counts: dict[tuple[int, str, str], int] = defaultdict(int)
    for part in id_chunks(revisions):
        rows = session.execute(
            select(Shot.product_revision_id, Shot.variant_key, Shot.template_name).where(
                Shot.product_revision_id.in_(part)
            )
        )
        for rev, vkey, tname in rows:
            counts[(rev, vkey, tname)] += 1
    out = {}
    for s in shots:
        slot = (s.product_revision_id, s.variant_key, s.template_name)
        key = f"{s.product_revision_id}:{s.template_name}:{s.variant_key}"
        out[s.id] = (key, counts.get(slot, 1))
    return out


def pick(
    session: Session, shot_id: int, reviewer: Reviewer, brands_dir: Path | None = None
) -> PickResult:
    """Pick ``shot_id`` as its slot's image: it is approved, and every other candidate still
    awaiting review (or approved, not yet published) is rejected with the reason "not picked",
    in the caller's one transaction (all or nothing), through ``approve`` and ``reject``, so
    the brand's reviewers and the compare-and-set apply as for any decision. A candidate the
    gate rejected stays rejected; a slot with a published candidate refuses a new pick."""
    shot = session.get(Shot, shot_id)
    if shot is None:
        raise ReviewError(f"shot {shot_id}: no such shot")
    group = candidate_group(session, shot)
    published = [g["id"] for g in group if g["state"] == ShotState.published.value]
    if published and published != [shot_id]:
        raise ReviewError(f"shot {shot_id}: shot {published[0]} of its slot is already published")
    others = [
        g["id"]
        for g in group
        if g["id"] != shot_id
        and g["state"] in (ShotState.pending_review.value, ShotState.approved.value)
    ]
    note = f"picked: candidate {shot.candidate + 1} of {len(group)}"
    with session.begin_nested():
        approve(session, [shot_id], reviewer, note=note, brands_dir=brands_dir)
        if others:
            reject(session, others, reviewer, NOT_PICKED, brands_dir=brands_dir)
    return PickResult(shot_id, others, [g["id"] for g in group])
