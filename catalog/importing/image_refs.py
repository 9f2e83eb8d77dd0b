"""The image references of given revisions -> ``source_image_refs`` rows (planning fills in
those of revisions imported before references were recorded; an import stages its own as it
reads, ``run_refs``).

Read from the revisions' ``data`` (the contract: ``images`` in position order, variant
images among them). A reference that cannot be a URL (empty, over 2 KB) is skipped and
counted; any other text is kept and refused, with its reason, by the fetch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from catalog.packshots.sources import RefRow, RefWriter
from pipeline.sources.refs import normalize_ref

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
