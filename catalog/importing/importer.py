"""``import_catalog``: one catalog file -> products and revisions, with a run record.

The run row is committed on its own first, so a failed import always leaves its
``import_runs`` row (status ``failed`` and the reason). The catalog data of a run is one
transaction: a bad *file* writes nothing else; a bad *row* is recorded in
``import_row_errors`` and the rest of the file still imports.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.brands import get_brand, upsert_brand
from catalog.importing.csv_formats import (
    FORMATS,
    Normalizer,
    detect_layout,
    layout_warnings,
    missing_key_message,
)
from catalog.importing.csv_source import (
    DEFAULT_MAX_FIELD_CHARS,
    CatalogFileError,
    RowError,
    SourceInfo,
    header_candidates,
    inspect_file,
    iter_chunks,
    read_sample,
)
from catalog.importing.import_store import ApplyResult, ImportStore
from catalog.importing.product_content import ProductAcc
from catalog.importing.run_refs import ImportRefs
from catalog.importing.xml_feed import (
    declared_encoding,
    iter_xml_chunks,
    looks_like_xml,
    xml_header,
)
from catalog.models import ImportRun, ImportStatus, utcnow
from pipeline.brand.config import BrandConfig
from pipeline.sources.refs import ref_base

log = logging.getLogger(__name__)
# Row warnings kept on the run (import_runs.warnings); the rest are counted.
MAX_ROW_WARNINGS = 1000

# (phase, done, total): phase "read" counts bytes, "apply" has no total (0).
Progress = Callable[[str, int, int], None]

__all__ = ["CatalogFileError", "CatalogImportError", "ImportSummary", "import_catalog"]


@dataclass
class ImportSummary:
    run_id: int | None
    status: str
    source: str
    format: str | None = None
    encoding: str | None = None
    rows_total: int = 0
    imported: int = 0  # distinct products in the file
    revisions_new: int = 0
    unchanged: int = 0
    reverted: int = 0  # products whose content went back to an older revision
    errors: int = 0  # rows recorded in import_row_errors
    row_warnings: int = 0  # rows that disagree with an earlier row of their product
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CatalogImportError(CatalogFileError):
    """The file could not be imported; ``summary`` is the failed run, already recorded."""

    def __init__(self, message: str, summary: ImportSummary) -> None:
        super().__init__(message)
        self.summary = summary


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of short-lived row lists make the cyclic GC rescan the heap over and over
    (it doubles the parse time); nothing here builds cycles, so pause it for the run."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _resolve(
    info: SourceInfo, brand: BrandConfig, fmt: str, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS
) -> Normalizer:
    """Pick the delimiter whose header fits the format; fail with one line otherwise."""
    if fmt not in ("auto", *FORMATS):
        raise CatalogFileError(f"unknown format {fmt!r}; use auto, {', '.join(FORMATS)}")
    if looks_like_xml(info.first):
        return _resolve_xml(info, brand, fmt, max_field_chars)
    candidates = header_candidates(read_sample(info))
    if not candidates:
        raise CatalogFileError(f"{info.path}: empty file (no header line)")
    for delim, header, line in candidates:
        layout = detect_layout(header, brand, fmt)
        if layout is not None:
            info.delimiter, info.header, info.header_line = delim, header, line
            dupes = sorted({h for h in header if h and header.count(h) > 1})
            if dupes:
                info.warnings.append(
                    f"{info.path}:{line}: duplicate columns {dupes}; the first of each is used"
                )
            info.warnings.extend(f"{info.path}:{line}: {w}" for w in layout_warnings(layout))
            return Normalizer(layout, brand)
    _, header, line = max(candidates, key=lambda c: len(c[1]))
    raise CatalogFileError(f"{info.path}:{line}: {missing_key_message(header, brand, fmt)}")


def _resolve_xml(
    info: SourceInfo, brand: BrandConfig, fmt: str, max_field_chars: int
) -> Normalizer:
    """A Merchant Center RSS/Atom feed: its items read as rows of a ``gmc`` feed."""
    if fmt not in ("auto", "gmc"):
        raise CatalogFileError(f"{info.path}: an XML feed, which is read as gmc, not {fmt}")
    # expat reads the declared encoding itself: the text sniffing's verdict doesn't apply.
    info.kind, info.encoding = "xml", declared_encoding(info.first)
    info.warnings.clear()
    info.header = xml_header(info, max_field_chars)
    layout = detect_layout(info.header, brand, "gmc")
    if layout is None:
        message = missing_key_message(info.header, brand, "gmc").replace("column", "element")
        raise CatalogFileError(f"{info.path}: {message}")
    info.warnings.extend(f"{info.path}: {w}" for w in layout_warnings(layout))
    return Normalizer(layout, brand)


def _record_failure(
    factory: sessionmaker[Session],
    run_id: int | None,
    summary: ImportSummary,
    brand: BrandConfig,
    message: str,
    file_sha256: str | None = None,
) -> None:
    summary.status = ImportStatus.failed.value
    summary.error = message
    # The data transaction was rolled back: nothing it counted was written.
    summary.imported = summary.revisions_new = summary.unchanged = summary.reverted = 0
    summary.errors = 0
    with factory.begin() as s:
        run = s.get(ImportRun, run_id) if run_id is not None else None
        if run is None:
            brand_row = get_brand(s, brand.name)
            run = ImportRun(source_uri=summary.source, brand_id=brand_row.id if brand_row else None)
            s.add(run)
        run.status = ImportStatus.failed.value
        run.error = message[:4000]
        run.format = summary.format
        run.encoding = summary.encoding
        run.rows_total = summary.rows_total
        run.file_sha256 = run.file_sha256 or file_sha256
        run.finished_at = utcnow()
        s.flush()
        summary.run_id = run.id
    log.info("import %s failed: %s", summary.source, message)


def import_catalog(
    session_factory: sessionmaker[Session],
    path: Path,
    brand: BrandConfig,
    fmt: str = "auto",
    progress: Progress | None = None,
    *,
    encoding: str = "auto",
    chunk_rows: int = 20_000,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    source_uri: str | None = None,
) -> ImportSummary:
    """Import ``path`` for ``brand``. Raises ``CatalogImportError`` (a ``CatalogFileError``) for a
    file that cannot be imported, after recording the failed run. ``source_uri``: where the
    file really lives when ``path`` is a downloaded copy (scheduled ingestion from S3): the
    run records it, and relative image references resolve against it."""
    path = Path(path)
    summary = ImportSummary(run_id=None, status=ImportStatus.running.value, source=str(path))
    file_sha: str | None = None
    try:
        info = inspect_file(path, encoding)
        file_sha = info.sha256
        summary.encoding = info.encoding
        normalizer = _resolve(info, brand, fmt, max_field_chars)
        summary.format, summary.encoding = normalizer.layout.fmt, info.encoding
    except CatalogFileError as exc:
        _record_failure(session_factory, None, summary, brand, str(exc), file_sha)
        raise CatalogImportError(str(exc), summary) from None
    summary.warnings.extend(info.warnings)
    for w in info.warnings:
        log.info("%s", w)

    with session_factory.begin() as s:
        brand_id = upsert_brand(s, brand).id
        run = ImportRun(
            brand_id=brand_id,
            source_uri=source_uri or str(path),
            file_sha256=info.sha256,
            format=summary.format,
            encoding=info.encoding,
            status=ImportStatus.running.value,
        )
        s.add(run)
        s.flush()
        summary.run_id = run.id
    run_id = summary.run_id

    try:
        with session_factory.begin() as s, _gc_paused():
            _load(
                s,
                brand_id,
                run_id,
                info,
                normalizer,
                summary,
                progress,
                chunk_rows,
                max_field_chars,
                ref_base(source_uri or str(path)),
            )
    except CatalogFileError as exc:
        _record_failure(session_factory, run_id, summary, brand, str(exc))
        raise CatalogImportError(str(exc), summary) from None
    except Exception as exc:
        _record_failure(session_factory, run_id, summary, brand, f"{type(exc).__name__}: {exc}")
        raise
    return summary


def _load(
    s: Session,
    brand_id: int,
    run_id: int,
    info: SourceInfo,
    normalizer: Normalizer,
    summary: ImportSummary,
    progress: Progress | None,
    chunk_rows: int,
    max_field_chars: int,
    refs_base: Path | str | None = None,
) -> None:
    store = ImportStore(s, brand_id, run_id)
    # Relative references resolve against where the catalog lives (ref_base).
    refs = ImportRefs(s, brand_id, run_id, refs_base or Path(info.path).parent)
    worker = _Worker(store.pg)
    try:
        _stage_file(
            store, refs, worker, info, normalizer, summary, (progress, chunk_rows, max_field_chars)
        )
        worker.wait()  # the connection is this thread's again
        if progress:
            progress("apply", 0, 0)
        result = store.apply()
        store.close()
        bad_refs = refs.skipped()
    finally:
        worker.close()
    if bad_refs:
        summary.warnings.append(f"{bad_refs} image references were empty or over 2 KB; skipped")
    _finish_run(s, run_id, info, summary, result)


class _Worker:
    """Runs one chunk's statements on a worker thread while the next chunk is parsed, so the
    server's inserts and index upkeep overlap Python's parsing instead of following it. One
    job at a time: ``submit`` and ``wait`` first finish (and raise the error of) the one
    before, and the caller waits before using the connection itself (psycopg serializes
    statements on it anyway). SQLite runs the job at once."""

    def __init__(self, threaded: bool) -> None:
        self.pool = ThreadPoolExecutor(1, "import-apply") if threaded else None
        self.pending: Future[None] | None = None

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()
        if self.pool is None:
            job()
        else:
            self.pending = self.pool.submit(job)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _stage_file(
    store: ImportStore,
    refs: ImportRefs,
    worker: _Worker,
    info: SourceInfo,
    normalizer: Normalizer,
    summary: ImportSummary,
    reading: tuple[Progress | None, int, int],
) -> None:
    """Read the file chunk by chunk into the store and the references, each chunk applied on
    the worker while the next is read; then merge non-adjacent fragments."""
    progress, chunk_rows, max_field_chars = reading
    # key -> number of fragments staged; >1 when a product's rows were not adjacent.
    seen: dict[str, int] = {}
    fragmented: list[str] = []
    row_warnings: list[str] = []  # rows that disagree with an earlier row of their product

    # The content hash of every product's current revision: an unchanged product is
    # staged without its data (no JSON to build or send), the slow part of a re-import.
    current = store.current_hashes()

    def stage(products: list[ProductAcc], errors: list[RowError]) -> None:
        rows = []
        fresh = []  # first fragments with new content: their image references are staged
        for acc in products:
            row_warnings.extend(acc.warnings())
            key = acc.key
            seq = seen.get(key, 0)
            seen[key] = seq + 1
            if seq == 1:
                fragmented.append(key)
            digest = acc.content_hash()
            data = ""
            if seq != 0 or current.get(key) != digest:
                data = acc.to_json()
                if seq == 0:  # a later fragment waits for the merge
                    fresh.append((key, digest, acc.images))
            rows.append((key, seq, acc.line, digest, data))
        worker.wait()  # the previous chunk's statements: the connection is free again
        summary.errors += store.row_errors(sorted(errors, key=lambda e: e.line))
        batch = store.stage(rows)
        ref_batch, urls = refs.add(fresh)
        worker.submit(partial(_apply_chunk, store, refs, batch, ref_batch, urls))

    on_bytes = (lambda n: progress("read", n, info.size)) if progress else None
    read = iter_xml_chunks if info.kind == "xml" else iter_chunks
    for chunk in read(info, chunk_rows, max_field_chars, on_bytes):
        summary.rows_total += chunk.rows_read
        done, key_errors = normalizer.feed(chunk.frame, chunk.lines)
        stage(done, chunk.errors + key_errors)
    stage(normalizer.finish(), [])
    worker.wait()
    row_warnings.extend(normalizer.warnings())

    if summary.rows_total == 0:
        raise CatalogFileError(f"{info.path}: no data rows after the header")
    summary.row_warnings = len(row_warnings)
    summary.warnings.extend(row_warnings[:MAX_ROW_WARNINGS])
    if len(row_warnings) > MAX_ROW_WARNINGS:
        summary.warnings.append(
            f"… and {len(row_warnings) - MAX_ROW_WARNINGS} more conflicting or duplicate rows"
        )
    if fragmented:
        refs.replace(fragmented, store.merge_fragments(fragmented))
        summary.warnings.append(
            f"{len(fragmented)} products had non-adjacent rows; they were merged "
            f"(first: {fragmented[0]!r})"
        )
    current.clear()


def _apply_chunk(
    store: ImportStore, refs: ImportRefs, batch: int, ref_batch: int, urls: dict[str, str]
) -> None:
    store.apply_batch(batch)
    refs.write(ref_batch, urls)


def _finish_run(
    s: Session, run_id: int, info: SourceInfo, summary: ImportSummary, result: ApplyResult
) -> None:
    """The applied counts on the summary and the run row; a run whose every row failed is
    ``failed`` (with its row errors kept)."""
    summary.imported = result.products
    summary.revisions_new = result.revisions_new
    summary.unchanged = result.unchanged
    summary.reverted = result.changed - result.revisions_new
    summary.status = ImportStatus.succeeded.value
    if summary.imported == 0 and summary.errors:
        # Every data row failed: the row errors are kept (nothing is lost), but the run is no
        # success, whatever the cause (a header the sniffer misread, the wrong format...).
        summary.status = ImportStatus.failed.value
        summary.error = (
            f"{info.path}: every data row failed ({summary.errors} row errors, no products "
            f"imported); see import_row_errors for run {run_id}"
        )

    run = s.scalars(select(ImportRun).where(ImportRun.id == run_id)).one()
    run.status = summary.status
    run.rows_total = summary.rows_total
    run.rows_error = summary.errors
    run.products_seen = summary.imported
    run.revisions_new = summary.revisions_new
    run.unchanged = summary.unchanged
    run.warnings = list(summary.warnings)
    run.error = summary.error
    run.finished_at = utcnow()
