"""The JSON API under ``/api/`` (OpenAPI at ``/api/openapi.json``): list and read shots,
approve, reject, pick, status, lineage, live updates. Bearer token, or the browser's session
plus its ``X-CSRF-Token`` for state changes. Errors are ``{"error": "one line"}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from catalog.db import MAX_ROW_ID
from catalog.lineage import LineageError, lineage_for, shot_chain
from catalog.models import Brand
from catalog.review import (
    near_duplicate_flags,
    queue_page,
    review_record,
    review_shot,
    shot_updates,
)
from catalog.status import status_report
from tasks.web import decide
from tasks.web.auth import Viewer, WebError, require_api_writer, require_viewer, web_state

router = APIRouter(prefix="/api", tags=["review"])

ShotId = Path(ge=1, le=MAX_ROW_ID, description="A shot id.")
Status = Literal["pending_review", "rejected", "approved", "published"]
Flag = Literal["near_duplicate", "override_needed"]
MAX_TEXT = 2000


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong, in one line.")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422, 429)
}


class ApproveIn(BaseModel):
    note: str | None = Field(default=None, max_length=MAX_TEXT, description="Why (optional).")
    override: bool = Field(default=False, description="Approve a rejected shot (needs a note).")


class RejectIn(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_TEXT, description="Why (required).")


class BulkIn(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=500)
    action: Literal["approve", "reject"]
    reason: str | None = Field(default=None, max_length=MAX_TEXT)


class DecisionOut(BaseModel):
    ids: list[int]
    state: str
    reviewer: str
    publish: str | None = None


class PickOut(DecisionOut):
    picked: int
    rejected: list[int] = Field(description='The other candidates, now rejected "not picked".')
    group: list[int]


class PageOut(BaseModel):
    shots: list[dict[str, Any]]
    next_after: int | None
    read_at: str


@router.get("/me", responses=ERRORS)
def me(viewer: Viewer = Depends(require_viewer)) -> dict[str, Any]:
    """Who the token or session speaks for."""
    return {"name": viewer.token.name, "token_id": viewer.token.id, "via": viewer.via}


@router.get("/shots", response_model=PageOut, responses=ERRORS)
def list_shots_api(
    request: Request,
    status: Status = "pending_review",
    brand: str | None = Query(None, max_length=200),
    template: str | None = Query(None, max_length=100),
    import_run: int | None = Query(None, ge=1, le=MAX_ROW_ID),
    flag: Flag | None = None,
    after: int | None = Query(None, ge=0, le=MAX_ROW_ID, description="Start past this id."),
    limit: int = Query(48, ge=1, le=200),
    _v: Viewer = Depends(require_viewer),
) -> PageOut:
    """The review queue, a keyset page at a time (``next_after`` for the next one)."""
    state = web_state(request)
    with state.session() as s:
        page = queue_page(
            s,
            status=status,
            brand=brand,
            template=template,
            import_run=import_run,
            flag=flag,
            after=after,
            limit=limit,
            near_duplicate_threshold=state.settings.near_duplicate_threshold,
        )
    return PageOut(shots=page.records, next_after=page.next_after, read_at=page.read_at)


@router.get("/shots/{shot_id}", responses=ERRORS)
def get_shot(
    request: Request, shot_id: int = ShotId, _v: Viewer = Depends(require_viewer)
) -> dict[str, Any]:
    """One shot: its review record (scores, reasons, events), its lineage, and the reject
    reasons its brand offers (``reject_reasons``; free text is accepted too)."""
    state = web_state(request)
    with state.session() as s:
        shot = review_shot(s, shot_id)
        if shot is None:
            raise WebError(404, f"shot {shot_id}: no such shot")
        dups = near_duplicate_flags(s, [shot], state.settings.near_duplicate_threshold)
        return {
            **review_record(shot, dups.get(shot.id)),
            "lineage": shot_chain(s, shot),
            "reject_reasons": state.reasons.for_brand(s.get(Brand, shot.brand_id)),
        }


@router.post("/shots/{shot_id}/approve", response_model=DecisionOut, responses=ERRORS)
def approve_api(
    request: Request,
    body: ApproveIn | None = None,
    shot_id: int = ShotId,
    viewer: Viewer = Depends(require_api_writer),
) -> dict[str, Any]:
    """Approve a shot awaiting review (or, with ``override`` and a note, a rejected one)."""
    body = body or ApproveIn()
    return decide.approve_one(web_state(request), viewer, shot_id, body.note, body.override)


@router.post("/shots/{shot_id}/reject", response_model=DecisionOut, responses=ERRORS)
def reject_api(
    request: Request,
    body: RejectIn,
    shot_id: int = ShotId,
    viewer: Viewer = Depends(require_api_writer),
) -> dict[str, Any]:
    """Reject a shot awaiting review (or approved, not yet published); a reason is required."""
    return decide.reject_many(web_state(request), viewer, [shot_id], body.reason)


@router.post("/shots/{shot_id}/pick", response_model=PickOut, responses=ERRORS)
def pick_api(
    request: Request, shot_id: int = ShotId, viewer: Viewer = Depends(require_api_writer)
) -> dict[str, Any]:
    """Pick this candidate of its slot: approved; the slot's others rejected "not picked"."""
    return decide.pick_one(web_state(request), viewer, shot_id)


@router.post("/shots/bulk", response_model=DecisionOut, responses=ERRORS)
def bulk_api(
    request: Request, body: BulkIn, viewer: Viewer = Depends(require_api_writer)
) -> dict[str, Any]:
    """Approve or reject several shots at once: all of them, or none (one error line)."""
    for sid in body.ids:
        if not 1 <= sid <= MAX_ROW_ID:
            raise WebError(404, f"shot {sid}: no such shot")
    state = web_state(request)
    if body.action == "approve":
        return decide.approve_many(state, viewer, body.ids)
    return decide.reject_many(state, viewer, body.ids, body.reason)


@router.get("/status", responses=ERRORS)
def status_api(
    request: Request,
    brand: str | None = Query(None, max_length=200),
    _v: Viewer = Depends(require_viewer),
) -> dict[str, Any]:
    """Counts by state, throughput, failures by kind."""
    with web_state(request).session() as s:
        return status_report(s, brand)


@router.get("/lineage/{ref}", responses=ERRORS)
def lineage_api(
    request: Request,
    ref: str = Path(min_length=1, max_length=1000),
    _v: Viewer = Depends(require_viewer),
) -> dict[str, Any]:
    """The lineage of a ref (shot id, asset key, sku ...), as ``shotline lineage`` resolves it."""
    try:
        with web_state(request).session() as s:
            return lineage_for(s, ref)
    except LineageError as exc:
        raise WebError(404, str(exc)) from None


@router.get("/updates", responses=ERRORS)
def updates_api(
    request: Request,
    ids: str = Query("", max_length=4000, description="Comma-separated shot ids on the page."),
    since: datetime | None = Query(None, description="The page's read_at."),
    _v: Viewer = Depends(require_viewer),
) -> dict[str, Any]:
    """Live queue: the current state and last decision of the given shots, and how many shots
    entered review since ``since``."""
    wanted: list[int] = []
    for part in ids.split(","):
        part = part.strip()
        if part:
            if not (part.isascii() and part.isdigit()) or not 1 <= int(part) <= MAX_ROW_ID:
                raise WebError(400, f"ids: {part[:40]!r} is not a shot id")
            wanted.append(int(part))
    with web_state(request).session() as s:
        return shot_updates(s, wanted, since)
