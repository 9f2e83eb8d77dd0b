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
from sqlalchemy.orm import Session, sessionmaker

from catalog.db import make_engine, make_sessionmaker
from pipeline.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """An error the user caused (bad file, unknown id...). Printed as one line, exit 2."""


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
