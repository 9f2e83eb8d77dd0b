"""What a phase hands back to its caller: the shot ids by outcome, and which errors retry."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LineResult:
    """Shot ids by where the message left them. The caller enqueues the next step from
    ``to_gate`` (generated: the ``cpu`` queue's gate) and ``retry`` (back to ``planned``:
    re-enqueued one shot per message); every other list is final for this message."""

    to_gate: list[int] = field(default_factory=list)  # generated; scored on the cpu queue
    gated: list[int] = field(default_factory=list)  # scored and finalized: pending review
    rejected: list[int] = field(default_factory=list)
    published: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already past this phase (redelivery)

    def merge(self, other: LineResult) -> None:
        for name, ids in vars(other).items():
            getattr(self, name).extend(ids)

    def summary(self) -> dict[str, int]:
        return {k: len(v) for k, v in vars(self).items()}


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth a retry with backoff: the DB, the blob store or the broker hiccuped.
    A permanent storage error (no bucket, access denied) is a ``StorageError`` too; the
    tasks' ``dont_autoretry_for`` keeps it from being retried."""
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from catalog.db import DBAPIError, OperationalError
    from pipeline.storage import StorageError

    return (
        OperationalError,
        DBAPIError,
        StorageError,
        BrokerError,
        RedisConnectionError,
        RedisTimeoutError,
        ConnectionError,
        TimeoutError,
    )
