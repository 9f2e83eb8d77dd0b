"""``shotline run``: every planned shot through generate -> gate, with progress and an ETA.

Both modes enqueue the same tasks (``tasks.dispatch``). Embedded default (no broker): each
send runs its batch in-process before it returns, so the bar moves batch by batch. With a
broker: enqueue to the fleet and follow progress from the database (the source of truth),
re-enqueueing shots that stall (a lost message, a broker restart that dropped its queue).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from kombu.exceptions import OperationalError as BrokerError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from catalog import status as queries
from catalog.db import OperationalError
from catalog.models import ShotState
from pipeline.settings import Settings
from tasks import dispatch
from tasks.context import context_for
from tasks.fetch import prefetch_for_shots

S = ShotState
# Where `run` stops: generate -> gate is done; review and publishing come later.
RUN_DONE = frozenset({S.pending_review, S.rejected, S.failed, S.approved, S.published})


@dataclass
class RunSummary:
    mode: str  # "in-process" or "fleet"
    shots: list[int]
    counts: dict[str, int]
    elapsed_s: float
    failures: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    sweeps: int = 0

    @property
    def total(self) -> int:
        return len(self.shots)

    @property
    def shots_per_s(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("shots")
        data.update(total=self.total, shots_per_s=round(self.shots_per_s, 3))
        return data


def select_planned(
    settings: Settings, brand: str | None = None, limit: int | None = None
) -> list[int]:
    with context_for(settings).sessions.begin() as s:
        return queries.planned_shots(s, brand, limit)


def state_counts(settings: Settings, shot_ids: Sequence[int]) -> Counter[str]:
    with context_for(settings).sessions.begin() as s:
        return queries.state_counts(s, shot_ids)


def failures(settings: Settings, shot_ids: Sequence[int], limit: int = 50) -> list[dict[str, Any]]:
    with context_for(settings).sessions.begin() as s:
        return queries.failures(s, shot_ids, limit)


def _progress(enabled: bool, label: str) -> Any:
    if not enabled:
        return nullcontext(None)
    return Progress(
        SpinnerColumn(),
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def _detail(counts: Counter[str]) -> str:
    order = [S.generated, S.pending_review, S.rejected, S.published, S.failed]
    return " ".join(f"{s.value}={counts[s]}" for s in order if counts.get(s))


def wait_for(
    settings: Settings,
    shot_ids: Sequence[int],
    done_states: Iterable[str] = RUN_DONE,
    *,
    timeout_s: float | None = None,
    progress: bool = False,
    label: str = "waiting",
    poll_s: float = 0.5,
    sweep: bool = True,
) -> tuple[Counter[str], bool, int]:
    """Follow shots in the database until all are in ``done_states``.

    Returns (counts, complete, sweeps). When nothing moves for ``stall_timeout_s`` the
    stuck shots are re-enqueued (idempotent), so a dropped message costs time, not shots.
    """
    done_states = frozenset(str(s) for s in done_states)
    start = last_move = time.monotonic()
    last_done, sweeps = -1, 0
    counts: Counter[str] = Counter()
    with _progress(progress, label) as bar:
        task = bar.add_task(label, total=len(shot_ids), detail="") if bar else None
        while True:
            try:
                counts = state_counts(settings, shot_ids)
            except OperationalError:
                # The database blinked (restart, dropped connection): keep following.
                time.sleep(poll_s)
                continue
            done = sum(n for state, n in counts.items() if state in done_states)
            if bar is not None:
                bar.update(task, completed=done, detail=_detail(counts))
            now = time.monotonic()
            if done >= len(shot_ids):
                return counts, True, sweeps
            if done != last_done:
                last_done, last_move = done, now
            elif sweep and now - last_move >= settings.stall_timeout_s:
                try:
                    dispatch.sweep_stalled(
                        settings, shot_ids, older_than_s=settings.stall_timeout_s
                    )
                    sweeps += 1
                except (OperationalError, BrokerError):
                    pass  # the next stall check tries again
                last_move = now
            if timeout_s is not None and now - start >= timeout_s:
                return counts, False, sweeps
            time.sleep(poll_s)


def _run_embedded(settings: Settings, ids: list[int], progress: bool) -> None:
    """Send the batches one by one: embedded, a send returns once its batch, the gate
    messages it enqueued and the retries of shots it handed back have all run here."""
    with _progress(progress, "generate → gate (in-process)") as bar:
        task = bar.add_task("run", total=len(ids), detail="") if bar else None
        for key, batch in dispatch.plan_batches(settings, ids):
            dispatch.enqueue_batch(settings, key, batch)
            if bar is not None:
                counts = state_counts(settings, ids)
                done = sum(n for state, n in counts.items() if state in RUN_DONE)
                bar.update(task, completed=done, detail=_detail(counts))


def retry_failed(settings: Settings, brand: str | None, kind: str | None) -> dict[str, int]:
    """Retryable failed shots (of ``kind``) back to planned, their errors kept in history
    (``catalog.delivery.retry``); returns how many, by kind."""
    from catalog.delivery.retry import requeue_failed

    with context_for(settings).sessions.begin() as s:
        return requeue_failed(s, brand, kind)


def run_line(
    settings: Settings,
    brand: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    timeout_s: float | None = None,
) -> RunSummary:
    """Run every planned shot (of ``brand``, at most ``limit``) through generate -> gate."""
    start = time.monotonic()
    ids = select_planned(settings, brand, limit)
    mode = "in-process" if settings.embedded else "fleet"
    complete, sweeps = True, 0
    if ids:  # packshot shots: their catalog images first, on the cpu queue
        prefetch_for_shots(settings, ids, wait_s=timeout_s or 300.0)
    if ids and settings.embedded:
        _run_embedded(settings, ids, progress)
    elif ids:
        dispatch.enqueue_generate(ids, settings)
        _, complete, sweeps = wait_for(
            settings, ids, timeout_s=timeout_s, progress=progress, label="generate → gate (fleet)"
        )
    counts = state_counts(settings, ids) if ids else Counter()
    return RunSummary(
        mode=mode,
        shots=ids,
        counts=dict(counts),
        elapsed_s=time.monotonic() - start,
        failures=failures(settings, ids) if ids else [],
        complete=complete,
        sweeps=sweeps,
    )
