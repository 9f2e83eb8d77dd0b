"""What the line reads about packshot shots' source images (SQL of the prepare phase)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.models import Shot, SourceImage, SourceStatus


@dataclass(frozen=True)
class SourceRow:
    """A ``source_images`` row as the prepare phase needs it (detached from the session)."""

    id: int
    url: str
    status: str
    sha256: str | None
    blob_key: str | None
    error: str | None


def source_rows(session: Session, ids: Iterable[int]) -> dict[int, SourceRow]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    return {
        r.id: SourceRow(r.id, r.url, r.status, r.sha256, r.blob_key, r.error)
        for r in session.scalars(select(SourceImage).where(SourceImage.id.in_(wanted)))
    }


def pending_sources_of(session: Session, shot_ids: Sequence[int]) -> list[int]:
    """The still-``pending`` source images of these (packshot) shots."""
    wanted = select(Shot.source_image_id).where(
        Shot.id.in_(list(shot_ids)), Shot.source_image_id.is_not(None)
    )
    return list(
        session.scalars(
            select(SourceImage.id).where(
                SourceImage.id.in_(wanted), SourceImage.status == SourceStatus.pending.value
            )
        )
    )


def count_pending(session: Session, source_ids: Sequence[int]) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(SourceImage)
            .where(
                SourceImage.id.in_(list(source_ids)),
                SourceImage.status == SourceStatus.pending.value,
            )
        )
        or 0
    )


def sources_by_id(session: Session, ids: Sequence[int]) -> list[SourceImage]:
    """The ``source_images`` rows a fetch message names (in the caller's session)."""
    return list(session.scalars(select(SourceImage).where(SourceImage.id.in_(list(ids)))))
