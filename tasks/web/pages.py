"""The HTML side: login, the queue, the shot page, images, and the form posts (approve,
reject, pick) for browsers without scripts. Every page is rendered on the server by Jinja2
with autoescaping on: catalog text (titles, prompts, reasons) is shown as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from catalog.db import MAX_ROW_ID
from catalog.lineage import shot_chain
from catalog.models import Brand
from catalog.review import (
    QUEUE_FLAGS,
    REVIEW_STATES,
    candidate_group,
    near_duplicate_flags,
    product_title,
    queue_page,
    review_record,
    review_shot,
    shot_image_keys,
)
from tasks.web import decide
from tasks.web.auth import (
    LoginLimiter,
    Viewer,
    WebError,
    check_csrf,
    csrf_token,
    current_viewer,
    log_in,
    log_out,
    require_viewer,
    web_state,
)
from tasks.web.reasons import DEFAULT_REJECT_REASONS

PAGE_SIZE = 48

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
)


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("viewer", None)
    flash = request.session.pop("flash", None)
    return templates.TemplateResponse(
        request,
        name,
        {"csrf": csrf_token(request), "flash": flash, "reasons": DEFAULT_REJECT_REASONS, **ctx},
        status_code=status,
    )


def login_limiter(request: Request) -> LoginLimiter:
    limiter: LoginLimiter = request.app.state.login_limiter
    return limiter


def _page_viewer(request: Request) -> Viewer:
    viewer = current_viewer(request)
    if viewer is None:
        raise WebError(401, "log in first")
    return viewer


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html.j2")


@router.post("/login")
def login(request: Request, token: str = Form(""), csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    try:
        log_in(request, token, login_limiter(request))
    except WebError as exc:
        if exc.status == 429:
            raise
        return render(request, "login.html.j2", status=exc.status, error=exc.message)
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    log_out(request)
    return RedirectResponse("/login", status_code=303)


def _int_param(name: str, raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise WebError(400, f"{name} {raw!r}: expected a number") from None
    if not 0 <= value <= MAX_ROW_ID:
        raise WebError(400, f"{name} {value}: out of range")
    return value


def queue_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    status = q.get("status") or "pending_review"
    if status not in REVIEW_STATES:
        raise WebError(400, f"status {status!r}: expected one of {', '.join(REVIEW_STATES)}")
    flag = q.get("flag") or None
    if flag is not None and flag not in QUEUE_FLAGS:
        raise WebError(400, f"flag {flag!r}: expected one of {', '.join(QUEUE_FLAGS)}")
    return {
        "status": status,
        "brand": q.get("brand") or None,
        "template": q.get("template") or None,
        "import_run": _int_param("import_run", q.get("import_run")),
        "flag": flag,
    }


@router.get("/")
def queue(request: Request) -> Response:
    viewer = current_viewer(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    state = web_state(request)
    f = queue_filters(request)
    after = _int_param("after", request.query_params.get("after"))
    with state.session() as s:
        page = queue_page(
            s,
            **f,
            after=after,
            limit=PAGE_SIZE,
            near_duplicate_threshold=state.settings.near_duplicate_threshold,
        )
        by_brand: dict[int | None, list[str]] = {}
        for rec in page.records:
            # Each card offers its own brand's reasons (the shot is in the session already).
            shot = review_shot(s, rec["id"])
            bid = shot.brand_id if shot is not None else None
            if bid not in by_brand:
                by_brand[bid] = state.reasons.for_brand(s.get(Brand, bid) if bid else None)
            rec["reject_reasons"] = by_brand[bid]
    next_url = None
    if page.next_after is not None:
        query = {k: v for k, v in f.items() if v is not None}
        next_url = "/?" + urlencode({**query, "after": page.next_after})
    return render(
        request,
        "queue.html.j2",
        viewer=viewer,
        records=page.records,
        f=f,
        states=REVIEW_STATES,
        flags=QUEUE_FLAGS,
        next_url=next_url,
        since=page.read_at,
    )


def _lineage_lines(chain: dict[str, Any]) -> list[tuple[str, str]]:
    """The lineage summary: one line per hop, JSON where a hop is a record."""
    keys = (
        *("brand", "csv", "product_revision", "brand_config", "template", "model", "loras"),
        *("sampling", "generation", "filter", "watermark", "asset"),
    )
    return [(k, json.dumps(chain.get(k), default=str, sort_keys=True)) for k in keys]


@router.get("/shots/{shot_id}")
def shot_page(request: Request, shot_id: int) -> Response:
    viewer = current_viewer(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    state = web_state(request)
    with state.session() as s:
        shot = review_shot(s, _id(shot_id))
        if shot is None:
            raise WebError(404, f"shot {shot_id}: no such shot")
        dups = near_duplicate_flags(s, [shot], state.settings.near_duplicate_threshold)
        record = review_record(shot, dups.get(shot.id))
        record["title"] = product_title(shot)
        record["candidate"] = shot.candidate
        group = candidate_group(s, shot)
        record["group_size"] = len(group)
        record["reject_reasons"] = state.reasons.for_brand(s.get(Brand, shot.brand_id))
        chain = shot_chain(s, shot)
        keys = shot_image_keys(s, shot.id) or {}
    return render(
        request,
        "shot.html.j2",
        viewer=viewer,
        r=record,
        lineage=_lineage_lines(chain),
        has_source=bool(keys.get("source")),
        has_mask=bool(keys.get("mask")),
        group=group if len(group) > 1 else None,
    )


def _id(shot_id: int) -> int:
    if not 1 <= shot_id <= MAX_ROW_ID:
        raise WebError(404, f"shot {shot_id}: no such shot")
    return shot_id


def _blob_response(request: Request, shot_id: int, which: str) -> Response:
    state = web_state(request)
    with state.session() as s:
        keys = shot_image_keys(s, _id(shot_id))
    if keys is None:
        raise WebError(404, f"shot {shot_id}: no such shot")
    key = keys.get(which)
    if not key:
        raise WebError(404, f"shot {shot_id}: no {which} image")
    try:
        data = bytes(state.store.get(key))
    except Exception:
        raise WebError(404, f"shot {shot_id}: its {which} image is missing from storage") from None
    media = "image/png" if data.startswith(b"\x89PNG") else "application/octet-stream"
    if data[:3] == b"\xff\xd8\xff":
        media = "image/jpeg"
    headers = {"Cache-Control": "private, max-age=3600"}
    return Response(data, media_type=media, headers=headers)


@router.get("/shots/{shot_id}/image")
def shot_image(request: Request, shot_id: int, _v: Viewer = Depends(_page_viewer)) -> Response:
    return _blob_response(request, shot_id, "image")


@router.get("/shots/{shot_id}/source")
def shot_source(request: Request, shot_id: int, _v: Viewer = Depends(_page_viewer)) -> Response:
    return _blob_response(request, shot_id, "source")


@router.get("/shots/{shot_id}/mask")
def shot_mask(request: Request, shot_id: int, _v: Viewer = Depends(_page_viewer)) -> Response:
    return _blob_response(request, shot_id, "mask")


@router.get("/thumbs/{shot_id}.webp")
def thumb(request: Request, shot_id: int, _v: Viewer = Depends(_page_viewer)) -> Response:
    state = web_state(request)
    with state.session() as s:
        keys = shot_image_keys(s, _id(shot_id))
    key = (keys or {}).get("image")
    data = state.thumbs.get(state.store, key) if key else None
    if data is None:
        raise WebError(404, f"shot {shot_id}: no image")
    # Keys are content-addressed: a thumbnail never changes, so the browser may keep it.
    headers = {"Cache-Control": "private, max-age=86400, immutable"}
    return Response(data, media_type="image/webp", headers=headers)


def _back(request: Request, message: str) -> Response:
    request.session["flash"] = message
    referer = request.headers.get("referer", "")
    # Only back to our own pages (the Referer is the browser's, but never follow it away).
    target = "/"
    base = str(request.base_url)
    if referer.startswith(base):
        target = "/" + referer[len(base) :]
    return RedirectResponse(target, status_code=303)


def _form_decision(request: Request, csrf: str, fn: Any, *args: Any) -> Response:
    check_csrf(request, csrf)
    viewer = require_viewer(request)
    try:
        out = fn(web_state(request), viewer, *args)
    except WebError as exc:
        return _back(request, exc.message)
    ids = ", ".join(map(str, out["ids"]))
    return _back(request, f"{out['state']} shot {ids} as {viewer.token.name}")


@router.post("/shots/{shot_id}/approve")
def approve_form(request: Request, shot_id: int, csrf: str = Form("")) -> Response:
    return _form_decision(request, csrf, decide.approve_one, _id(shot_id), None, False)


@router.post("/shots/{shot_id}/reject")
def reject_form(
    request: Request,
    shot_id: int,
    csrf: str = Form(""),
    reason: str = Form(""),
    note: str = Form(""),
) -> Response:
    why = note.strip() or reason.strip() or None
    return _form_decision(request, csrf, decide.reject_many, [_id(shot_id)], why)


@router.post("/shots/{shot_id}/pick")
def pick_form(request: Request, shot_id: int, csrf: str = Form("")) -> Response:
    return _form_decision(request, csrf, decide.pick_one, _id(shot_id))
