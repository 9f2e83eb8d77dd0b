"""What the web app's requests share: settings, the database sessions, the blob store and
the thumbnail cache (built once per app, like the CLI's ``CliState`` per invocation)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.db import Engine, Session, make_engine, make_sessionmaker, sessionmaker
from pipeline.settings import Settings
from tasks.web.reasons import ReasonCache
from tasks.web.thumbs import ThumbCache

SECRET_FILE = "web-session.key"


def session_secret(var_dir: Path) -> str:
    """The key that signs session cookies: kept in ``var_dir`` (mode 0600) so a restart keeps
    reviewers logged in; made on first use."""
    path = var_dir / SECRET_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server made it first
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key)
    return key


@dataclass
class WebState:
    settings: Settings
    secure_cookies: bool = False  # behind TLS: the session cookie gets ``Secure``
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    thumbs: ThumbCache = field(init=False)
    reasons: ReasonCache = field(init=False)
    _store: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.thumbs = ThumbCache(self.settings.var_dir)
        self.reasons = ReasonCache(self.settings.brands_dir)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self.sessions() as s, s.begin():
            yield s

    @property
    def store(self) -> Any:
        if self._store is None:
            from pipeline.storage import make_blob_store

            self._store = make_blob_store(self.settings)
        return self._store

    def close(self) -> None:
        self.engine.dispose()
