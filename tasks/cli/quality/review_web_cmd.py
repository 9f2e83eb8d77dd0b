"""``shotline review serve|token|pick``: the review queue in a browser, reviewer tokens, and
picking one of a slot's candidates.

Registered on the ``review`` app by ``review_cmd`` (this module imports nothing of it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from tasks.cli.common import MAX_ID, cli_state, console, err_console, fail, print_json
from tasks.output import styled

if TYPE_CHECKING:
    pass


token_app = typer.Typer(
    help="Reviewer tokens for the browser and the HTTP API.", no_args_is_help=True
)


def serve_cmd(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="Port to listen on."),
    secure_cookies: bool = typer.Option(
        False, "--secure-cookies", help="Mark the session cookie Secure (served over TLS)."
    ),
) -> None:
    """The review queue in the browser (and the JSON API under /api/), served by uvicorn."""
    import uvicorn

    from tasks.web.app import create_app

    state = cli_state(ctx)
    app = create_app(state.settings, secure_cookies=secure_cookies)
    console.print(
        styled(
            "review at ",
            (f"http://{host}:{port}/", "bold"),
            "  (log in with a token from `shotline review token create NAME`)",
        ),
        soft_wrap=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)


@token_app.command("create")
def token_create_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The reviewer the token speaks for."),
    expires: int | None = typer.Option(
        None, "--expires", metavar="DAYS", min=1, max=3650, help="Expire after DAYS days."
    ),
) -> None:
    """A new token for NAME, printed once (only its hash is stored)."""
    from catalog.review import ReviewError
    from catalog.tokens import create_token

    try:
        with cli_state(ctx).session() as s:
            info, token = create_token(s, name, expires)
    except ReviewError as exc:
        fail(str(exc))
    err_console.print(
        styled(f"token {info.id} for ", (info.name, "bold"), ": shown once, keep it secret")
    )
    print(token)


@token_app.command("list")
def token_list_cmd(
    ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Every token: id, reviewer, status, created, expires, last used (never the token)."""
    from catalog.tokens import list_tokens

    with cli_state(ctx).session() as s:
        tokens = list_tokens(s)
    if json_out:
        print_json(
            [
                {
                    "id": t.id,
                    "name": t.name,
                    "status": t.status,
                    "created_at": t.created_at,
                    "expires_at": t.expires_at,
                    "revoked_at": t.revoked_at,
                    "last_used_at": t.last_used_at,
                }
                for t in tokens
            ]
        )
        return
    table = Table()
    for col in ("id", "reviewer", "status", "created", "expires", "last used"):
        table.add_column(col)
    for t in tokens:
        table.add_row(
            str(t.id),
            escape(t.name),
            t.status,
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.expires_at:%Y-%m-%d}" if t.expires_at else "-",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke_cmd(
    ctx: typer.Context,
    token_id: int = typer.Argument(..., metavar="ID", min=1, max=MAX_ID),
) -> None:
    """Revoke a token by id: its sessions end at their next request."""
    from catalog.review import ReviewError
    from catalog.tokens import revoke_token

    try:
        with cli_state(ctx).session() as s:
            info = revoke_token(s, token_id)
    except ReviewError as exc:
        fail(str(exc))
    console.print(styled(f"token {info.id} of ", (info.name, "bold"), " revoked"))


def pick_cmd(
    ctx: typer.Context,
    shot_id: int = typer.Argument(..., metavar="ID", min=1, max=MAX_ID),
    reviewer: str | None = typer.Option(
        None, "--reviewer", help="Who decides (default: SHOTLINE_REVIEWER).", show_default=False
    ),
) -> None:
    """Pick shot ID as its slot's image (pick 1 of N): it is approved and published, and the
    slot's other candidates are rejected with the reason "not picked", all at once."""
    from catalog.review import ReviewError, pick, resolve_reviewer
    from tasks.dispatch import enqueue_publish

    state = cli_state(ctx)
    settings = state.settings
    try:
        with state.session() as s:
            who = resolve_reviewer(
                s, reviewer or settings.reviewer, free_names=settings.review_free_names
            )
            result = pick(s, shot_id, who, settings.brands_dir)
    except ReviewError as exc:
        fail(str(exc))
    others = ", ".join(map(str, result.rejected)) or "none left to reject"
    console.print(
        styled(f"picked shot {result.picked} as ", (who.name, "bold"), f"; not picked: {others}")
    )
    try:
        enqueue_publish([result.picked], settings)
    except Exception as exc:  # the pick is committed; `shotline run` publishes it later
        fail(f"picked, but publishing failed: {type(exc).__name__}: {exc}", 1)
    console.print("published" if settings.embedded else "publishing enqueued")
