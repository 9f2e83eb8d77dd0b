"""The review web app: ``create_app(settings)`` for ``shotline review serve`` and the tests.

Security headers on every response: a CSP that loads nothing from anywhere but the app (no
inline script, no CDN), no framing, no MIME sniffing, no referrer. Errors are one line:
JSON under ``/api/``, a small page elsewhere; a stack trace never reaches a response.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.settings import Settings
from tasks.web import api, pages, triggers, verify
from tasks.web.auth import LoginLimiter, WebError
from tasks.web.state import WebState, session_secret

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
SESSION_COOKIE = "shotline_session"
SESSION_MAX_AGE_S = 12 * 3600


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers above to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())[:500]


def _validation_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _one_line(f"{where}: {first.get('msg', 'invalid')}{more}")


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/") or request.url.path == "/api":
        return JSONResponse({"error": message}, status_code=status)
    if status == 401:
        return RedirectResponse("/login", status_code=303)
    return pages.render(request, "error.html.j2", status=status, code=status, message=message)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WebError)
    async def web_error(request: Request, exc: WebError) -> Response:
        return _error(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, _one_line(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error(request, 422, _validation_line(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error (see the server log)"}, status_code=500)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Load the publisher (Celery and its broker client, ~0.5 s) before serving rather than
    # inside the first approve (tests/benchmarks/bench_review_web.py measured it there).
    await anyio.to_thread.run_sync(importlib.import_module, "tasks.dispatch")
    yield


def create_app(settings: Settings, *, secure_cookies: bool = False) -> FastAPI:
    """The app; ``secure_cookies`` when it is served over TLS (directly or behind a proxy)."""
    app = FastAPI(
        title="shotline review",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN; the CSP allows nothing remote
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.web = WebState(settings, secure_cookies)
    app.state.login_limiter = LoginLimiter()
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings.var_dir),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="strict",
        https_only=secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(verify.router)
    app.include_router(triggers.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
