"""Source image queries: rows for the URLs a catalog names, fetch results, and lookups.

A ``source_images`` row exists once per URL (keyed by the URL's sha256) however many
products and revisions name it; ``source_image_refs`` says which revision names it where.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from catalog.models import (
    Product,
    ProductRevision,
    SourceImage,
    SourceImageRef,
    SourceStatus,
    utcnow,
)
from pipeline.sources.refs import url_digest

_BATCH = 500


def _insert(session: Session, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model)


def ensure_source_images(session: Session, urls: Iterable[str]) -> dict[str, int]:
    """The ``source_images`` id of every URL, creating ``pending`` rows for new ones."""
    wanted = {url_digest(u): u for u in urls}
    ids: dict[str, int] = {}
    digests = list(wanted)
    now = utcnow()
    for start in range(0, len(digests), _BATCH):
        batch = digests[start : start + _BATCH]
        rows = [
            {
                "url_sha256": d,
                "url": wanted[d],
                "status": SourceStatus.pending.value,
                "details": {},
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for d in batch
        ]
        session.execute(_insert(session, SourceImage).on_conflict_do_nothing(), rows)
        found = session.execute(
            select(SourceImage.url_sha256, SourceImage.id).where(SourceImage.url_sha256.in_(batch))
        )
        ids.update({wanted[d]: i for d, i in found})
    return ids


class RefRow(NamedTuple):
    """One image reference of a revision (a tuple: an import makes one per image cell)."""

    revision_id: int
    position: int
    url: str
    raw: str
    line: int | None


_REF_STAGE = "shotline_ref_stage"
# Fresh source_images rows past this many: refresh the planner's statistics before the join
# (the table looked empty when the transaction began; a stale plan loops over it per row).
_ANALYZE_AFTER = 1000


class RefWriter:
    """Writes an import's image references set-based, whatever their number.

    One temporary staging table for the whole run: every batch is streamed into it
    (Postgres: one ``COPY`` per batch; SQLite: ``executemany``), then ``finish`` writes the
    new ``pending`` source images with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``
    and the references with another. No per-batch statements, no per-row round trips.

    Both inserts go in reference order (the first reference of each new image decides its
    id), so every index but the URL digest's grows at its end: in digest or hash order the
    two statements took 2-3x as long.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        conn = session.connection()
        self.pg = conn.dialect.name == "postgresql"
        self.dbapi: Any = conn.connection.driver_connection
        self.count = 0
        session.execute(text(f"DROP TABLE IF EXISTS {_REF_STAGE}"))
        session.execute(
            text(
                f"CREATE TEMPORARY TABLE {_REF_STAGE} (rev INTEGER NOT NULL, "
                "pos INTEGER NOT NULL, digest TEXT NOT NULL, url TEXT NOT NULL, "
                "raw TEXT NOT NULL, line INTEGER)"
            )
        )

    def add(self, refs: Iterable[RefRow]) -> None:
        rows = [(r.revision_id, r.position, url_digest(r.url), r.url, r.raw, r.line) for r in refs]
        if not rows:
            return
        self.count += len(rows)
        if self.pg:
            with self.dbapi.cursor() as cur, cur.copy(f"COPY {_REF_STAGE} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self.dbapi.executemany(f"INSERT INTO {_REF_STAGE} VALUES (?, ?, ?, ?, ?, ?)", rows)

    def finish(self) -> int:
        """Write what was staged; returns how many references were given."""
        run = self.session.execute
        if self.count:
            if self.pg:  # temp tables are never auto-analyzed: the joins need the stats
                run(text(f"ANALYZE {_REF_STAGE} (digest)"))
            details = "CAST('{}' AS JSONB)" if self.pg else "'{}'"
            params = {"now": utcnow(), "pending": SourceStatus.pending.value}
            inserted = run(
                text(
                    "INSERT INTO source_images "
                    "(url_sha256, url, status, details, attempts, created_at, updated_at) "
                    f"SELECT digest, MIN(url), :pending, {details}, 0, :now, :now "
                    f"FROM {_REF_STAGE} WHERE true GROUP BY digest ORDER BY MIN(rev), MIN(pos) "
                    "ON CONFLICT (url_sha256) DO NOTHING"
                ),
                params,
            )
            # An INSERT's result is a CursorResult (the Result type does not say so).
            new = int(getattr(inserted, "rowcount", 0) or 0)
            if self.pg and new > _ANALYZE_AFTER:
                run(text("ANALYZE source_images (url_sha256)"))
            run(
                text(
                    "INSERT INTO source_image_refs "
                    "(product_revision_id, source_image_id, position, raw, source_line) "
                    f"SELECT st.rev, si.id, st.pos, st.raw, st.line FROM {_REF_STAGE} st "
                    "JOIN source_images si ON si.url_sha256 = st.digest WHERE true "
                    "ORDER BY st.rev, st.pos "
                    "ON CONFLICT (product_revision_id, position) DO NOTHING"
                )
            )
        run(text(f"DROP TABLE {_REF_STAGE}"))
        return self.count


def write_refs(session: Session, refs: Sequence[RefRow]) -> int:
    """Insert references and their ``pending`` source images (existing rows are kept), in one
    ``RefWriter`` pass. Returns how many were given."""
    if not refs:
        return 0
    writer = RefWriter(session)
    writer.add(refs)
    return writer.finish()


def refs_for_revision(session: Session, revision_id: int) -> list[SourceImageRef]:
    """A revision's image references, by position."""
    return list(
        session.scalars(
            select(SourceImageRef)
            .where(SourceImageRef.product_revision_id == revision_id)
            .order_by(SourceImageRef.position)
        )
    )


def sources_to_fetch(
    session: Session,
    *,
    brand_id: int | None = None,
    ids: Sequence[int] | None = None,
    include_failed: bool = False,
    include_fetched: bool = False,
) -> list[int]:
    """Ids of source images still to fetch (pending; failed and fetched ones on request),
    optionally those a brand's current revisions name."""
    states = [SourceStatus.pending.value]
    if include_failed:
        states.append(SourceStatus.failed.value)
    if include_fetched:
        states.append(SourceStatus.fetched.value)
    q = select(SourceImage.id).where(SourceImage.status.in_(states))
    if ids is not None:
        q = q.where(SourceImage.id.in_(list(ids)))
    if brand_id is not None:
        named = (
            select(SourceImageRef.source_image_id)
            .join(Product, Product.current_revision_id == SourceImageRef.product_revision_id)
            .where(Product.brand_id == brand_id)
        )
        q = q.where(SourceImage.id.in_(named))
    return list(session.scalars(q.order_by(SourceImage.id)))


@dataclass(frozen=True)
class FetchOutcome:
    """What one fetch found: the content (``sha256`` None when it failed) or the error."""

    source_id: int
    error: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    blob_backend: str | None = None
    blob_key: str | None = None
    details: dict[str, Any] | None = None
    unchanged: bool = False  # 304, or the same sha256 as before: the row is not rewritten


def record_outcomes(session: Session, outcomes: Iterable[FetchOutcome]) -> None:
    now = utcnow()
    for o in outcomes:
        values: dict[str, Any] = {"attempts": SourceImage.attempts + 1, "updated_at": now}
        if o.error is not None:
            values |= {"status": SourceStatus.failed.value, "error": o.error[:4000]}
        elif o.unchanged:
            values |= {"status": SourceStatus.fetched.value, "error": None}
        else:
            values |= {
                "status": SourceStatus.fetched.value,
                "error": None,
                "sha256": o.sha256,
                "size_bytes": o.size_bytes,
                "width": o.width,
                "height": o.height,
                "content_type": o.content_type,
                "etag": o.etag,
                "last_modified": o.last_modified,
                "blob_backend": o.blob_backend,
                "blob_key": o.blob_key,
                "details": o.details or {},
                "fetched_at": now,
            }
        session.execute(update(SourceImage).where(SourceImage.id == o.source_id).values(**values))


def find_sources(session: Session, ref: str) -> list[SourceImage]:
    """Source images by URL or content sha256 (a 64-hex string), for reverse lineage."""
    ref = ref.strip()
    conds = [SourceImage.url_sha256 == url_digest(ref)]
    if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref.lower()):
        conds.append(SourceImage.sha256 == ref.lower())
    return list(session.scalars(select(SourceImage).where(or_(*conds)).order_by(SourceImage.id)))


def revisions_naming(session: Session, source_ids: Sequence[int]) -> list[ProductRevision]:
    return list(
        session.scalars(
            select(ProductRevision)
            .join(SourceImageRef, SourceImageRef.product_revision_id == ProductRevision.id)
            .where(SourceImageRef.source_image_id.in_(list(source_ids)))
            .distinct()
            .order_by(ProductRevision.id)
        )
    )


def brand_sources(
    session: Session, brand_id: int, status: str | None = None, limit: int | None = None
) -> list[SourceImage]:
    """Source images the brand's current revisions name (``status`` filters), by id."""
    named = (
        select(SourceImageRef.source_image_id)
        .join(Product, Product.current_revision_id == SourceImageRef.product_revision_id)
        .where(Product.brand_id == brand_id)
    )
    q = select(SourceImage).where(SourceImage.id.in_(named))
    if status:
        q = q.where(SourceImage.status == status)
    return list(session.scalars(q.order_by(SourceImage.id).limit(limit)))


def pick_source(
    refs: Sequence[SourceImageRef], which: str | int, variant_images: Sequence[str]
) -> tuple[SourceImageRef | None, str]:
    """The reference a packshot template asks for, or None and why there is none.

    ``which``: ``"variant"`` (the variant's own image, as the catalog wrote it in
    ``variant_images``; else the product's first), ``"first"`` (the product's first image),
    or ``N`` (the image at position N).
    """
    ordered = sorted(refs, key=lambda r: r.position)
    if which == "variant":
        own = [r for r in ordered if r.raw in set(variant_images)]
        if own:
            return own[0], ""
        which = "first"
    if which == "first":
        if ordered:
            return ordered[0], ""
        return None, "the product has no image in the catalog"
    try:
        position = int(which)
    except (TypeError, ValueError):
        return None, f"unknown image choice {which!r} (use variant, first or a position)"
    for r in ordered:
        if r.position == position:
            return r, ""
    return None, f"the product has no image at position {position} (it has {len(ordered)})"
