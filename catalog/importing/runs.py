"""Import runs as scheduled ingestion asks about them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import ImportRun


def run_of_file(session: Session, file_sha256: str) -> int | None:
    """The id of an import run of a file with this sha256, if the line has seen it."""
    return session.scalar(select(ImportRun.id).where(ImportRun.file_sha256 == file_sha256).limit(1))
