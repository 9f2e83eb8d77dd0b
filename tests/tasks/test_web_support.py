"""Shared harness for the review web app tests (no tests here): a migrated database per
test (a SQLite copy, or a fresh Postgres clone), reviewer tokens, gated shots, and the app
served by a real uvicorn on a loopback port for the browser tests."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Brand, ReviewEvent, Shot
from catalog.tokens import create_token, revoke_token
from pipeline.settings import Settings
from pipeline.storage import LocalBlobStore
from tasks.web.app import create_app
from tests.conftest import ROOT, free_port
from tests.factories import make_brand, make_gated_shot

_sqlite_template: Path | None = None


def sqlite_url(tmp: Path) -> str:
    """A migrated SQLite database for one test (a copy of one migrated per process)."""
    global _sqlite_template
    if _sqlite_template is None or not _sqlite_template.exists():
        folder = Path(__import__("tempfile").mkdtemp(prefix="web-tpl-"))
        _sqlite_template = folder / "template.db"
        migrate.upgrade(f"sqlite:///{_sqlite_template}")
    db = tmp / "shotline.db"
    shutil.copy(_sqlite_template, db)
    return f"sqlite:///{db}"


@dataclass
class WebEnv:
    settings: Settings
    sessions: sessionmaker[Session]
    store: LocalBlobStore
    tmp: Path
    brand_id: int | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def insert(self, fn: Callable[[Session], Any]) -> Any:
        with self.sessions() as s, s.begin():
            return fn(s)

    def brand(self) -> Brand:
        with self.sessions() as s:
            if self.brand_id is None:
                with s.begin():
                    self.brand_id = make_brand(s, name="acme").id
            brand = s.get(Brand, self.brand_id)
            assert brand is not None
            return brand

    def gated(self, **kw: Any) -> int:
        self.brand()

        def make(s: Session) -> int:
            brand = s.get(Brand, self.brand_id)
            return make_gated_shot(s, brand=brand, store=self.store, **kw).id

        return int(self.insert(make))

    def token(self, name: str, expires_days: int | None = None) -> tuple[int, str]:
        info, token = self.insert(lambda s: create_token(s, name, expires_days))
        return info.id, token

    def revoke(self, token_id: int) -> None:
        self.insert(lambda s: revoke_token(s, token_id))

    def state(self, shot_id: int) -> str:
        with self.sessions() as s:
            return str(s.scalar(select(Shot.state).where(Shot.id == shot_id)))

    def events(self, shot_id: int) -> list[tuple[str, str, str, str | None]]:
        with self.sessions() as s:
            rows = s.scalars(
                select(ReviewEvent).where(ReviewEvent.shot_id == shot_id).order_by(ReviewEvent.id)
            )
            return [(e.action, e.reviewer, e.authenticated_reviewer, e.note) for e in rows]


def web_env(url: str, tmp: Path) -> Iterator[WebEnv]:
    var = tmp / "var"
    (tmp / "brands").mkdir(exist_ok=True)  # no YAML: the stored brand config lists reviewers
    # The stored config's LoRA (``../loras/...``, next to the brands folder): planning checks it.
    if not (tmp / "loras").exists():
        shutil.copytree(ROOT / "samples" / "loras", tmp / "loras")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        var_dir=var,
        blob_root=var / "blobs",
        blob_backend="local",
        model_cache_dir=ROOT / "var" / "models",
        brands_dir=tmp / "brands",
        device="cpu",
    )
    engine = make_engine(url)
    try:
        yield WebEnv(settings, make_sessionmaker(engine), LocalBlobStore(var / "blobs"), tmp)
    finally:
        engine.dispose()


@dataclass
class Served:
    base: str
    server: uvicorn.Server
    thread: threading.Thread
    app: Any


def serve(settings: Settings) -> Served:
    """The app on a real uvicorn (its own thread, a loopback port); ``stop`` ends it."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return Served(f"http://127.0.0.1:{port}", server, thread, app)


def stop(served: Served) -> None:
    served.server.should_exit = True
    served.thread.join(timeout=10)
    served.app.state.web.close()
