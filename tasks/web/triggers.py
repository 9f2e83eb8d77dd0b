"""``POST /api/brands/{name}/plan`` and ``/run``: start work for a brand, never wait for it.

Plan writes the brand's missing shots (``catalog.planning.plan_shots``, as ``shotline plan``
does) and answers with the counts. Run sends the brand's planned shots to the fleet's queues
(source fetches, then generate batches, as ``shotline run`` sends them) and answers with how
many; progress is ``GET /api/status``. Without a broker the line runs in-process, which a
request must not do: run is refused there. Both are for the brand's ``reviewers:`` only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from catalog.brands import get_brand
from catalog.planning import PlanningError, plan_shots
from catalog.review import ReviewError, brand_reviewers
from catalog.status import planned_shots
from pipeline.brand.config import NAME_RE, BrandConfig, BrandConfigError
from pipeline.brand.loader import find_brand
from tasks.web.api import ERRORS
from tasks.web.auth import Viewer, WebError, require_api_writer, web_state
from tasks.web.state import WebState

router = APIRouter(prefix="/api/brands", tags=["line"])

BrandName = Path(pattern=NAME_RE, description="A brand name (its YAML in the brands folder).")
RESPONSES = {**ERRORS, 503: ERRORS[409]}


class PlanIn(BaseModel):
    templates: list[str] | None = Field(
        default=None, min_length=1, max_length=50, description="Only these templates."
    )


class PlanOut(BaseModel):
    brand: str
    products: int
    created: int = Field(description="Shots planned now.")
    existing: int = Field(description="Shots already planned before.")
    skipped: int = Field(description="Combinations whose prompt failed to render.")
    warnings: list[str]


class RunIn(BaseModel):
    limit: int | None = Field(default=None, ge=1, le=1_000_000, description="At most this many.")


class RunOut(BaseModel):
    brand: str
    shots: int = Field(description="Planned shots sent to generate.")
    messages: int = Field(description="Generate messages sent (one GPU batch each).")
    source_fetches: int = Field(description="Packshot source images sent to fetch first.")


def _allowed(viewer: Viewer, brand: str, reviewers: list[str]) -> None:
    if viewer.reviewer.name.casefold() not in {r.casefold() for r in reviewers}:
        who = ", ".join(reviewers) if reviewers else "nobody (no reviewers: in its config)"
        raise WebError(
            403,
            f"{viewer.reviewer.name!r} may not plan or run brand {brand!r}; its reviewers: {who}",
        )


def _config(state: WebState, name: str) -> BrandConfig:
    try:
        return find_brand(state.settings.brands_dir, name)
    except BrandConfigError as exc:
        if any("no brand config named" in p for p in exc.problems):
            raise WebError(404, f"unknown brand {name!r}: no brand config of that name") from None
        raise WebError(422, f"brand {name!r}: " + "; ".join(exc.problems)) from None


@router.post("/{name}/plan", response_model=PlanOut, responses=ERRORS)
def plan_api(
    request: Request,
    body: PlanIn | None = None,
    name: str = BrandName,
    viewer: Viewer = Depends(require_api_writer),
) -> dict[str, Any]:
    """Plan the brand's missing shots (idempotent, as ``shotline plan``); the counts."""
    state = web_state(request)
    cfg = _config(state, name)
    _allowed(viewer, name, [str(r) for r in cfg.reviewers])
    try:
        with state.session() as s:
            summary = plan_shots(s, cfg, state.settings, body.templates if body else None)
    except (PlanningError, BrandConfigError) as exc:
        raise WebError(422, str(exc)) from None
    return {**summary.to_json(), "warnings": summary.warnings[:50]}


def _send(state: WebState, ids: list[int]) -> tuple[int, int]:
    """(source fetches, generate messages) sent for ``ids``; nothing waits for them."""
    from kombu.exceptions import OperationalError as BrokerError

    from tasks import dispatch
    from tasks.fetch import prefetch_for_shots

    try:
        fetches = prefetch_for_shots(state.settings, ids, wait_s=0)
        return fetches, dispatch.enqueue_generate(ids, state.settings)
    except BrokerError as exc:
        raise WebError(503, f"the broker did not take the work: {exc}") from None


@router.post("/{name}/run", response_model=RunOut, responses=RESPONSES)
def run_api(
    request: Request,
    body: RunIn | None = None,
    name: str = BrandName,
    viewer: Viewer = Depends(require_api_writer),
) -> dict[str, Any]:
    """Send the brand's planned shots to the fleet (enqueue only, as ``shotline run`` sends
    them); the counts. Follow them with ``GET /api/status``."""
    state = web_state(request)
    try:
        with state.session() as s:
            row = get_brand(s, name)
            if row is None:
                raise WebError(404, f"unknown brand {name!r} (import its catalog first)")
            reviewers = brand_reviewers(row, state.settings.brands_dir)
    except ReviewError as exc:
        raise WebError(422, str(exc)) from None
    _allowed(viewer, name, reviewers)
    if state.settings.embedded:
        raise WebError(
            409, "no broker configured (SHOTLINE_BROKER_URL): run the line with `shotline run`"
        )
    with state.session() as s:
        ids = planned_shots(s, name, body.limit if body else None)
    fetches, messages = _send(state, ids) if ids else (0, 0)
    return {"brand": name, "shots": len(ids), "messages": messages, "source_fetches": fetches}
