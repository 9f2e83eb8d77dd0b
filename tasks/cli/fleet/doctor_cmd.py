"""``shotline doctor``: is this installation able to run the line? One line per check.

Checks, in order: the database is reachable and at the migrations' head; the blob store is
writable (a probe blob is put, read back and deleted); the broker answers; the queues the
line sends to have consumers (and none holds messages nobody will take); every brand's
models and LoRAs resolve (files exist, LoRA sha256 equal to their pins). Each problem is one
``problem:`` line; each passed check one ``ok`` line. Exit 2 when anything is wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tasks.cli.common import CliState, clean, cli_state, console, err_console
from tasks.output import styled

if TYPE_CHECKING:
    from pipeline.settings import Settings


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str


def _database(state: CliState) -> Iterator[Finding]:
    from catalog.db import SQLAlchemyError
    from catalog.migrate import schema_heads
    from tasks.cli.common import describe_db_error

    try:
        current, heads = schema_heads(state.engine, state.settings.database_url)
    except SQLAlchemyError as exc:
        reason = describe_db_error(exc) if hasattr(exc, "orig") else str(exc)  # type: ignore[arg-type]
        yield Finding("database", False, " ".join(reason.split()))
        return
    if current != heads:
        have = ", ".join(sorted(current)) or "no schema"
        want = ", ".join(sorted(heads))
        fix = "run `shotline db upgrade`"
        yield Finding("database", False, f"at {have}, the migrations' head is {want}: {fix}")
        return
    yield Finding("database", True, f"reachable, at head {', '.join(sorted(heads))}")


def _bucket(settings: Settings) -> Iterator[Finding]:
    from pipeline.storage import StorageError, make_blob_store, probe_store

    try:
        store = make_blob_store(settings)
        probe_store(store, uuid.uuid4().hex)
    except (StorageError, OSError, ValueError) as exc:
        yield Finding("blob store", False, " ".join(str(exc).split()))
        return
    where = (
        f"s3://{settings.s3_bucket}/{settings.s3_prefix}"
        if settings.blob_backend == "s3"
        else str(settings.blob_root)
    )
    yield Finding("blob store", True, f"{where} writable (put, get, delete)")


def _expected_queues(settings: Settings) -> set[str]:
    """The queues the line sends to: cpu, ingest when sources are set, gpu.<key> per model."""
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import load_brand
    from tasks.queues import QUEUE_CPU, QUEUE_INGEST, gpu_queue, model_key

    queues = {QUEUE_CPU}
    if settings.ingest_sources:
        queues.add(QUEUE_INGEST)
    if settings.model:
        queues.add(gpu_queue(model_key(settings.model)))
        return queues
    for path in sorted(settings.brands_dir.glob("*.y*ml")):
        try:
            queues.add(gpu_queue(model_key(load_brand(path).base_model)))
        except BrandConfigError:
            continue  # reported by the brand check
    return queues


def _fleet(settings: Settings) -> Iterator[Finding]:
    from tasks.cli.fleet.fleet_info import fleet_info, start_hint

    if settings.embedded:
        yield Finding("broker", True, "none configured: the line runs in this process")
        return
    info = fleet_info(settings, _expected_queues(settings))
    if not info.reachable:
        yield Finding("broker", False, f"unreachable: {info.error}")
        return
    yield Finding("broker", True, f"reachable, {len(info.workers)} worker(s) answering")
    expected = _expected_queues(settings)
    for queue in info.queues():
        consumers = info.consumers(queue)
        waiting = info.depths.get(queue, 0)
        if consumers:
            detail = f"{len(consumers)} consumer(s), {waiting} waiting"
            yield Finding(f"queue {queue}", True, detail)
        elif queue in expected or waiting:
            yield Finding(
                f"queue {queue}",
                False,
                f"no consumer, {waiting} message(s) waiting (start `{start_hint(queue)}`)",
            )


def _model(settings: Settings, where: str, model_id: str) -> Finding:
    from pipeline.generate.modelspec import ModelLoadError, check_model

    try:
        spec = check_model(model_id, settings)
        if spec.kind == "repo":
            spec.local_path(settings)  # in the local cache? (downloads are off)
    except (ModelLoadError, OSError, ValueError) as exc:
        return Finding(where, False, " ".join(str(exc).split()))
    return Finding(where, True, f"model {model_id} resolves ({spec.kind})")


def _brands(settings: Settings) -> Iterator[Finding]:
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import load_brand
    from pipeline.generate.lora import LoraError, verify_adapter
    from pipeline.types import AdapterRef

    files = sorted(Path(settings.brands_dir).glob("*.y*ml"))
    if not files:
        yield Finding("brands", False, f"no brand YAML in {settings.brands_dir}")
        return
    models_seen: set[str] = set()
    for path in files:
        try:
            cfg = load_brand(path)
        except BrandConfigError as exc:
            yield Finding(f"brand {path.name}", False, " ".join(str(exc).split()))
            continue
        model = settings.model or cfg.resolved_base_model()
        if model not in models_seen:
            models_seen.add(model)
            yield _model(settings, f"brand {cfg.name}", model)
        for lora in cfg.loras:
            ref = AdapterRef(lora.name, lora.sha256, lora.weight, cfg.resolve_uri(lora.path))
            try:
                verify_adapter(ref)
            except LoraError as exc:
                yield Finding(f"brand {cfg.name}", False, " ".join(str(exc).split()))
                continue
            yield Finding(f"brand {cfg.name}", True, f"LoRA {lora.name} matches its pin")


def doctor(ctx: typer.Context) -> None:
    """Check the database (reachable, at head), the blob store (writable), the broker and
    its queues' consumers, and every brand's models and LoRAs (files and sha256 pins).

    One line per check; exit 2 when any check finds a problem.
    """
    state = cli_state(ctx)
    settings = state.settings
    checks = [_database(state), _bucket(settings), _fleet(settings), _brands(settings)]
    problems = 0
    for check in checks:
        for f in check:
            if f.ok:
                console.print(styled(("ok", "green"), f" {clean(f.check)}: {clean(f.detail)}"))
            else:
                problems += 1
                err_console.print(
                    styled(("problem:", "bold red"), f" {clean(f.check)}: {clean(f.detail)}"),
                    soft_wrap=True,
                )
    if problems:
        raise typer.Exit(2)
