"""What a worker process holds for its whole life: settings, DB engine, blob store, models.

Built once per process (``worker_process_init`` / ``worker_init`` for ``--pool solo``, or once
per in-process run) so tasks never pay for a model load or a connection setup.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from catalog.db import Engine, Session, make_engine, make_sessionmaker, sessionmaker
from pipeline.brand.config import BrandConfig, BrandConfigError
from pipeline.brand.loader import FileStamp, brand_cache, file_stamp
from pipeline.settings import Settings
from pipeline.storage import BlobStore, make_blob_store
from pipeline.types import Gate, Generator

if TYPE_CHECKING:
    from pipeline.packshot.onnx_matte import OnnxMatte

IO_THREADS = 8
log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def quiet_model_loading() -> None:
    """Silence the libraries' own tqdm bars and chatty load warnings.

    They would interleave with our rich progress bar and fill worker logs; our own logs
    already say what was loaded and how long it took.
    """
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()


def import_callable(spec: str) -> Callable[..., Any]:
    """``"package.module:name"`` -> the object (a settings-selected factory)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"factory {spec!r} must look like 'package.module:callable'")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    _store: BlobStore | None = None
    _gate: Gate | None = None
    _generators: dict[str, Generator] = field(default_factory=dict)
    # name -> (config, its file's stamp when read; None for a stored config): the last good
    # config, kept while an edit does not load (the files themselves: ``brand_cache``)
    _brands: dict[str, tuple[BrandConfig, FileStamp | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _io: ThreadPoolExecutor | None = None
    _finalize: ThreadPoolExecutor | None = None
    # Why the gate could not be loaded for gating on this GPU host (then it is not tried
    # for every message again; the orchestrator leaves gating to the cpu queue).
    host_gate_error: str | None = None
    _mattes: dict[Path, OnnxMatte] = field(default_factory=dict)

    def io_map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]`` on a small thread pool: blob-store calls are network
        round trips, and a batch's uploads need not wait for each other. Errors propagate."""
        seq = list(items)
        if len(seq) <= 1:
            return [fn(x) for x in seq]
        with self._lock:  # finalize threads call this concurrently on the GPU host
            if self._io is None:
                self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="blob-io")
        return list(self._io.map(fn, seq))

    @property
    def finalize_pool(self) -> ThreadPoolExecutor:
        """The GPU host's finalize threads (``finalize_threads``): watermarking, encoding and
        uploading batch N while the main thread drives the GPU through batch N+1."""
        with self._lock:
            if self._finalize is None:
                self._finalize = ThreadPoolExecutor(
                    max_workers=self.settings.finalize_threads, thread_name_prefix="finalize"
                )
            return self._finalize

    @classmethod
    def build(cls, settings: Settings) -> WorkerContext:
        engine = make_engine(settings.database_url)
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(engine))

    @property
    def store(self) -> BlobStore:
        # Built once, under the lock: the first batch calls this from every I/O thread at
        # once, and each boto3 client costs ~0.1 s of CPU to build (service model JSON).
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = make_blob_store(self.settings)
        return self._store

    def generator(self, model_id: str) -> Generator:
        """The generator for ``model_id``, loaded on first use and kept resident."""
        with self._lock:
            gen = self._generators.get(model_id)
            if gen is None:
                factory: Callable[[Settings, str], Generator]
                if self.settings.generator_factory:
                    factory = import_callable(self.settings.generator_factory)
                else:
                    from pipeline.generate.generator import load_generator

                    quiet_model_loading()
                    factory = load_generator
                gen = factory(self.settings, model_id)
                self._generators[model_id] = gen
            return gen

    def loaded_generator(self, model_id: str) -> Generator | None:
        """The generator for ``model_id`` if it is loaded already (never loads it)."""
        with self._lock:
            return self._generators.get(model_id)

    @property
    def gate_loaded(self) -> bool:
        return self._gate is not None

    def gate(self) -> Gate:
        with self._lock:
            if self._gate is None:
                factory: Callable[[Settings], Gate]
                if self.settings.gate_factory:
                    factory = import_callable(self.settings.gate_factory)
                else:
                    from pipeline.gate.stage import load_gate

                    factory = load_gate
                self._gate = factory(self.settings)
            return self._gate

    def matte(self) -> OnnxMatte | None:
        """The learned matte for every opaque packshot (``matte_model``), loaded once per
        process; None when unset. A bad file raises ``CutoutError``."""
        path = self.settings.matte_model
        return None if path is None else self._load_matte(path, None)

    def fallback_matte(self) -> OnnxMatte | None:
        """The pinned matte for non-uniform backgrounds (``matte_fallback``), or None when it
        is "none" or not installed (those packshots are then refused, saying how to fix it)."""
        from pipeline.packshot.matte_models import KNOWN
        from pipeline.pinned_weights import installed

        if self.settings.matte_fallback == "none":
            return None
        known = KNOWN[self.settings.matte_fallback]
        path = known.path_in(self.settings.model_cache_dir)
        if path in self._mattes:  # checked and loaded once: not re-hashed per message
            return self._mattes[path]
        if installed(known, self.settings.model_cache_dir) is None:
            return None
        return self._load_matte(path, known.sha256, known.input_size)

    def _load_matte(self, path: Path, sha256: str | None, size: int = 1024) -> OnnxMatte:
        with self._lock:
            if path not in self._mattes:
                from pipeline.packshot.onnx_matte import load_matte

                self._mattes[path] = load_matte(path, size=size, sha256=sha256)
            return self._mattes[path]

    def brand_config(
        self, name: str, stored: dict[str, Any] | None = None, fresh: bool = False
    ) -> BrandConfig:
        """The brand's YAML from brands_dir; the config stored on the row if the file is gone.

        Kept while its file is unchanged: a stat per call notices an edit, so a changed
        policy reaches the next batch without a worker restart. An edit that does not load
        (a half-saved file) keeps the last good config, with a warning. ``fresh`` reads the
        file regardless (a rescore applies the policy as it is now)."""
        cached = self._brands.get(name)
        if cached is not None and not fresh and file_stamp(cached[0].source_path) == cached[1]:
            return cached[0]
        try:
            cfg = brand_cache.find(self.settings.brands_dir, name, fresh=fresh)
        except BrandConfigError as exc:
            if cached is not None and not fresh and cached[0].source_path is not None:
                log.warning("brand %s: keeping the last good config: %s", name, exc)
                self._brands[name] = (cached[0], file_stamp(cached[0].source_path))
                return cached[0]
            if stored is None:
                raise
            cfg = BrandConfig.model_validate(stored)
        self._brands[name] = (cfg, file_stamp(cfg.source_path))
        return cfg

    def close(self) -> None:
        for pool in (self._finalize, self._io):
            if pool is not None:
                pool.shutdown(wait=True)
        self.engine.dispose()


_contexts: dict[str, WorkerContext] = {}
_contexts_lock = threading.Lock()


def context_for(settings: Settings) -> WorkerContext:
    """One context per distinct settings in this process (workers have exactly one)."""
    key = settings.model_dump_json()
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = WorkerContext.build(settings)
            _contexts[key] = ctx
        return ctx


def reset_contexts() -> None:
    """Drop every cached context (after fork, or between tests)."""
    with _contexts_lock:
        for ctx in _contexts.values():
            ctx.engine.dispose(close=False)
        _contexts.clear()
