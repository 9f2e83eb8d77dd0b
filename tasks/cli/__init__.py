"""The ``shotline`` command line (Typer + rich)."""

from __future__ import annotations

import typer

from tasks.cli.app import app
from tasks.cli.common import describe_db_error, err_console
from tasks.output import styled


def _error_line(message: str) -> None:
    err_console.print(styled(("error:", "bold red"), " ", " ".join(message.split())))


def usage_message(exc: typer.TyperException) -> str:
    """A usage error as one line: the command, what was wrong, and where to look."""
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return f"{where}{message}{hint}"


def main() -> None:
    # Usage errors (a bad option, an id out of range) and an unreachable or unmigrated
    # database both get one line and exit 2, never a box or a traceback. Typer's standalone
    # mode would draw usage errors as a multi-line panel, so the errors are caught here.
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        _error_line("aborted")
        raise SystemExit(1) from None
    except typer.TyperException as exc:  # typer's click: usage errors (exit 2)
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help
            _error_line(usage_message(exc))
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except KeyboardInterrupt:
        _error_line("interrupted")
        raise SystemExit(130) from None
    except OSError as exc:
        # A path a user gave that the OS refuses (too long a name, a permission, a loop) and
        # that no command caught first: still one line naming the file.
        if exc.filename is None:
            raise
        _error_line(f"{exc.filename}: {exc.strerror or exc}")
        raise SystemExit(2) from None
    except Exception as exc:
        # The database layer is imported by the commands that use it, not at start-up
        # (`shotline --help` stays light): its error class is looked up only when one is raised.
        from catalog.db import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        _error_line(describe_db_error(exc))
        raise SystemExit(2) from None
    raise SystemExit(code if isinstance(code, int) else 0)


__all__ = ["app", "main", "usage_message"]
