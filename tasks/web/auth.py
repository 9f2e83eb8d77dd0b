"""Who is asking: a browser session (made at ``/login`` from a reviewer token) or a bearer
token on the API; CSRF tokens for every state change a browser makes; login rate limits.

A session cookie holds the token's id, signed (Starlette's ``SessionMiddleware``: HttpOnly,
SameSite=Strict, Secure behind TLS). Every request looks the token up again, so revoking it
ends its sessions at once. Forms carry the session's CSRF token as the ``csrf`` field, the
page's scripts as the ``X-CSRF-Token`` header; bearer requests need neither (a browser never
adds an Authorization header by itself).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from fastapi import Request

from catalog.review import Reviewer
from catalog.tokens import TokenInfo, active_token, authenticate, end_sessions, token_reviewer
from tasks.web.state import WebState

CSRF_KEY = "csrf"
TOKEN_KEY = "token_id"
LOGIN_AT_KEY = "login_at"  # epoch seconds: a logout ends the sessions made before it
LOGIN_WINDOW_S = 300.0
LOGIN_MAX_FAILURES = 10  # per client address per window


class WebError(Exception):
    """A request that cannot be served: its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())[:500]


@dataclass(frozen=True)
class Viewer:
    token: TokenInfo
    via: str  # "session" | "bearer"

    @property
    def reviewer(self) -> Reviewer:
        return token_reviewer(self.token)


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get(CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_KEY] = token
    return token


def check_csrf(request: Request, given: str | None) -> None:
    expected = request.session.get(CSRF_KEY)
    if not isinstance(expected, str) or not given or not secrets.compare_digest(expected, given):
        raise WebError(403, "missing or wrong CSRF token; reload the page and try again")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current_viewer(request: Request) -> Viewer | None:
    """The authenticated reviewer of this request, or None."""
    state = web_state(request)
    bearer = _bearer(request)
    if bearer is not None:
        with state.session() as s:
            info = authenticate(s, bearer)
        return Viewer(info, "bearer") if info is not None else None
    token_id = request.session.get(TOKEN_KEY)
    if not isinstance(token_id, int):
        return None
    with state.session() as s:
        info = active_token(s, token_id)
    login_at = request.session.get(LOGIN_AT_KEY)
    if info is None or not isinstance(login_at, float) or info.session_ended(login_at):
        request.session.clear()  # revoked, expired or logged out: the session ends
        return None
    return Viewer(info, "session")


def require_viewer(request: Request) -> Viewer:
    """FastAPI dependency: the viewer, or 401."""
    viewer = current_viewer(request)
    if viewer is None:
        has_bearer = _bearer(request) is not None
        why = "invalid, expired or revoked token" if has_bearer else "log in first"
        raise WebError(401, f"not authenticated: {why}")
    return viewer


def require_api_writer(request: Request) -> Viewer:
    """For API state changes: a bearer token, or a session plus its ``X-CSRF-Token``."""
    viewer = require_viewer(request)
    if viewer.via == "session":
        check_csrf(request, request.headers.get("x-csrf-token"))
    return viewer


class LoginLimiter:
    """At most ``LOGIN_MAX_FAILURES`` failed logins per client address per window."""

    def __init__(self, max_failures: int = LOGIN_MAX_FAILURES, window_s: float = LOGIN_WINDOW_S):
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures[client]
        while times and times[0] < now - self.window_s:
            times.popleft()
        return times

    def check(self, client: str) -> None:
        with self._lock:
            if len(self._recent(client, time.monotonic())) >= self.max_failures:
                raise WebError(429, "too many failed logins; wait a few minutes")

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def log_in(request: Request, token_text: str, limiter: LoginLimiter) -> TokenInfo:
    """Exchange a reviewer token for a session; a new CSRF token comes with it."""
    client = request.client.host if request.client else "?"
    limiter.check(client)
    with web_state(request).session() as s:
        info = authenticate(s, token_text.strip())
    if info is None:
        limiter.failed(client)
        raise WebError(401, "unknown, expired or revoked token")
    limiter.succeeded(client)
    request.session.clear()  # no session fixation: a fresh session for the new identity
    request.session[TOKEN_KEY] = info.id
    request.session[LOGIN_AT_KEY] = time.time()
    request.session[CSRF_KEY] = secrets.token_urlsafe(32)
    return info


def log_out(request: Request) -> None:
    """End this browser's session and every other one made with its token so far: the cookie
    is signed, not stored, so clearing it alone would leave a copy of it valid."""
    token_id = request.session.get(TOKEN_KEY)
    if isinstance(token_id, int):
        with web_state(request).session() as s:
            end_sessions(s, token_id)
    request.session.clear()
