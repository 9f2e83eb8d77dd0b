"""Approve, reject and pick from the browser or the API, through the catalog functions the
CLI uses (``catalog.review``): the brand's ``reviewers:`` list, the compare-and-set between two
reviewers and the events are theirs; this module maps their errors to HTTP statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from catalog.review import ReviewError, approve, reject
from tasks.web.auth import Viewer, WebError
from tasks.web.state import WebState

log = logging.getLogger(__name__)


def _status_for(message: str) -> int:
    """The HTTP status of a ``ReviewError``: who may not, what does not exist, what conflicts."""
    if "may not review" in message or "is not the authenticated" in message:
        return 403
    if "no such shot" in message:
        return 404
    if "needs --reason" in message or "needs --override" in message:
        return 422
    return 409  # already decided by someone else, or a state that does not allow it


def _web_words(message: str) -> str:
    """The CLI's flag names in a message, said as the web form says them."""
    return message.replace("--override --reason TEXT", "an override with a reason").replace(
        "--reason TEXT", "a reason"
    )


def run_decision(
    state: WebState, fn: Callable[..., Sequence[Any]], viewer: Viewer, *args: Any, **kw: Any
) -> list[int]:
    """Apply ``fn`` (``approve``/``reject``/``pick``) as the viewer, in one transaction; the
    shot ids it decided. A ``ReviewError`` becomes a ``WebError`` with its one line."""
    try:
        with state.session() as s:
            done = fn(
                s, *args, reviewer=viewer.reviewer, brands_dir=state.settings.brands_dir, **kw
            )
    except ReviewError as exc:
        message = str(exc)
        raise WebError(_status_for(message), _web_words(message)) from None
    return [e if isinstance(e, int) else e.shot_id for e in done]


def publish(state: WebState, ids: list[int]) -> str:
    """Hand approved shots to publishing, as ``review approve`` does; what happened, in words.

    The approval is committed either way: ``shotline run`` picks approved shots up again."""
    if not ids:
        return "nothing to publish"
    from tasks.dispatch import enqueue_publish

    try:
        enqueue_publish(ids, state.settings)
    except Exception as exc:
        log.warning("publishing %s failed: %s: %s", ids, type(exc).__name__, exc)
        return "approved; publishing will be retried by `shotline run`"
    return "published" if state.settings.embedded else "publishing enqueued"


def approve_one(
    state: WebState, viewer: Viewer, shot_id: int, note: str | None, override: bool
) -> dict[str, Any]:
    ids = run_decision(state, approve, viewer, [shot_id], note=note, override=override)
    return {
        "ids": ids,
        "state": "approved",
        "reviewer": viewer.token.name,
        "publish": publish(state, ids),
    }


def reject_many(
    state: WebState, viewer: Viewer, shot_ids: list[int], reason: str | None
) -> dict[str, Any]:
    ids = run_decision(state, reject, viewer, shot_ids, reason=reason)
    return {"ids": ids, "state": "rejected", "reviewer": viewer.token.name}


def approve_many(state: WebState, viewer: Viewer, shot_ids: list[int]) -> dict[str, Any]:
    ids = run_decision(state, approve, viewer, shot_ids)
    return {
        "ids": ids,
        "state": "approved",
        "reviewer": viewer.token.name,
        "publish": publish(state, ids),
    }


def pick_one(state: WebState, viewer: Viewer, shot_id: int) -> dict[str, Any]:
    """Pick one candidate of its slot: it is approved, the others rejected as "not picked"."""
    from catalog.review import pick

    try:
        with state.session() as s:
            result = pick(s, shot_id, viewer.reviewer, state.settings.brands_dir)
    except ReviewError as exc:
        message = str(exc)
        raise WebError(_status_for(message), _web_words(message)) from None
    return {
        "ids": [result.picked],
        "picked": result.picked,
        "rejected": result.rejected,
        "group": result.group,
        "state": "approved",
        "reviewer": viewer.token.name,
        "publish": publish(state, [result.picked]),
    }
