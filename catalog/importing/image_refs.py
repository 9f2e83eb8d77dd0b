"""The image references of an import's new revisions -> ``source_image_refs`` rows.

Read back from the revisions the run created (their ``data`` is the contract: ``images``
in position order, variant images among them), so merged fragments and every format are
handled the same way. A reference that cannot be a URL (empty, over 2 KB) is
skipped and counted; any other text is kept and refused, with its reason, by the fetch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import ProductRevision
from catalog.packshots.sources import RefRow, RefWriter
from pipeline.sources.refs import normalize_ref

_BATCH = 5000  # revisions read back at a time
_FLUSH = 50_000  # references staged at a time


def revision_refs(
    revision_id: int, data: Mapping[str, Any], line: int | None, base_dir: Path | str | None
) -> tuple[list[RefRow], int]:
    """The references of one revision's data, and how many cells were unusable. Variant
    images are among ``images`` already (import adds them), so one row per image is all."""
    refs: list[RefRow] = []
    skipped = 0
    for pos, raw in enumerate(data.get("images") or [], start=1):
        url = normalize_ref(raw, base_dir) if isinstance(raw, str) else None
        if url is None:
            skipped += 1
            continue
        refs.append(RefRow(revision_id, pos, url, raw, line))
    return refs, skipped


def write_run_refs(session: Session, run_id: int, base_dir: Path | str | None) -> tuple[int, int]:
    """References of every revision import run ``run_id`` created: (written, skipped).

    Only each revision's ``images`` is read back (not its whole ``data``), in one streamed
    query, and the references go into one staging table; one pair of set-based statements
    writes them all (``RefWriter``)."""
    images = ProductRevision.data["images"]
    rows = session.execute(
        select(ProductRevision.id, images, ProductRevision.source_line)
        .where(ProductRevision.import_run_id == run_id)
        .order_by(ProductRevision.id)
        .execution_options(yield_per=_BATCH)
    )
    writer = RefWriter(session, fresh=True)
    skipped = _stage(writer, ((rev, {"images": imgs}, line) for rev, imgs, line in rows), base_dir)
    return writer.finish(), skipped


def write_revision_refs(
    session: Session, rows: Iterable[Any], base_dir: Path | str | None
) -> tuple[int, int]:
    """References of the given ``(revision id, data, source line)`` rows: (written, skipped)."""
    writer = RefWriter(session)
    skipped = _stage(writer, rows, base_dir)
    return writer.finish(), skipped


def _stage(writer: RefWriter, rows: Iterable[Any], base_dir: Path | str | None) -> int:
    skipped = 0
    pending: list[RefRow] = []
    for rev_id, data, line in rows:
        refs, bad = revision_refs(rev_id, data if isinstance(data, Mapping) else {}, line, base_dir)
        pending.extend(refs)
        skipped += bad
        if len(pending) >= _FLUSH:
            writer.add(pending)
            pending = []
    writer.add(pending)
    return skipped
