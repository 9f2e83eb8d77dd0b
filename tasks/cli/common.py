"""Shared CLI plumbing: settings, DB sessions, user errors (one line, exit 2), consoles."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from catalog.db import make_engine, make_sessionmaker
from pipeline.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


class UserError(Exception):
    """An error the user caused (bad file, unknown id...). Printed as one line, exit 2."""


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def describe_db_error(exc: DBAPIError) -> str:
    """One line for a database the CLI cannot use, with the fix when we know it."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if "no such table" in detail or ("does not exist" in detail and "relation" in detail):
        return f"the database has no shotline schema ({detail}); run `shotline db upgrade`"
    return f"cannot use the database: {detail}"


def settings() -> Settings:
    return get_settings()


@lru_cache(maxsize=1)
def engine() -> Engine:
    return make_engine(settings().database_url)


def session_factory() -> sessionmaker[Session]:
    return make_sessionmaker(engine())


@contextmanager
def session() -> Iterator[Session]:
    factory = session_factory()
    with factory() as s, s.begin():
        yield s


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
