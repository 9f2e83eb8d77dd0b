"""Shared CLI plumbing: the per-invocation state (settings, DB sessions), user errors (one
line, exit 2), consoles."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from tasks.output import SafeConsole, neutralize, styled

if TYPE_CHECKING:  # loaded by the commands that use them: `shotline --help` imports neither
    from catalog.db import DBAPIError, Engine, Session, sessionmaker
    from pipeline.settings import Settings

# Our own messages use markup; user and catalog text is escaped where it is embedded (fail()
# escapes the whole message). SafeConsole shows control characters as visible escapes and
# never turns ``:name:`` into an emoji, whatever the call site forgot.
console = SafeConsole(markup=True)
err_console = SafeConsole(markup=True, stderr=True, soft_wrap=True)


# Every id a command takes (shot, asset, import run) is bounded like a row id (``min=1,
# max=MAX_ID``): typer turns a number outside it into a usage error (one line, exit 2) before
# any query runs.
# catalog.db.MAX_ROW_ID, written out: catalog.db imports SQLAlchemy, which `shotline --help`
# must not (tests/tasks/test_cli_startup.py checks the two agree).
MAX_ID = 2**31 - 1
# Counts (--limit, --show, ...) are bounded too, by a real bound: no query can return more
# rows than there are row ids, so a count never needs to exceed the largest id. (A storage
# limit such as 2**62 read as "x<=4611686018427387904" in every --help.)
COUNT_MAX = MAX_ID


@dataclass
class CliState:
    """What one ``shotline`` invocation shares (``typer.Context.obj``): the settings read from
    the environment when it started, and the process's one engine (the ``WorkerContext``'s,
    which the line's in-process run uses too), built on first use so commands that never
    touch the database never connect."""

    settings: Settings
    _used: bool = field(default=False, init=False, repr=False)

    @property
    def engine(self) -> Engine:
        from tasks.context import context_for

        self._used = True
        return context_for(self.settings).engine

    def sessionmaker(self) -> sessionmaker[Session]:
        from tasks.context import context_for

        self._used = True
        return context_for(self.settings).sessions

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self.sessionmaker()() as s, s.begin():
            yield s

    def close(self) -> None:
        """Give the pooled connections back (the invocation is over)."""
        if self._used:
            from tasks.context import context_for

            context_for(self.settings).engine.dispose()
        self._used = False


def cli_state(ctx: typer.Context) -> CliState:
    """The state the root callback put on the context (subcommand contexts inherit it)."""
    state = ctx.find_object(CliState)
    if state is None:  # a command invoked without the root app, which builds the state
        raise RuntimeError("no CliState on the context: invoke commands through tasks.cli.app")
    return state


def fail(message: str, code: int = 2) -> NoReturn:
    # The message embeds user text (file names, refs, brand names): printed as text, one line.
    err_console.print(styled(("error:", "bold red"), " ", message), soft_wrap=True)
    raise typer.Exit(code)


def describe_db_error(exc: DBAPIError) -> str:
    """One line for a database the CLI cannot use, with the fix when we know it."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if "no such table" in detail or ("does not exist" in detail and "relation" in detail):
        return f"the database has no shotline schema ({detail}); run `shotline db upgrade`"
    return f"cannot use the database: {detail}"


def clean(value: Any) -> str:
    """``value`` as text without control characters, for text from untrusted files (image
    metadata, folder names): no terminal control sequence reaches the screen."""
    return neutralize(str(value))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
