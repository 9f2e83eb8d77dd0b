"""An import's image references, staged and written chunk by chunk with its products.

Each product staged with new content stages its ``images`` (the ``product_revisions.data``
contract: position order, variant images among them, so every format and merged fragments
are handled the same way) keyed by product key and content hash. Once the chunk's revisions
exist (``ImportStore.apply_batch``), ``write`` adds the chunk's new ``source_images`` and
joins its staged references to the revisions: two set-based statements a chunk, which the
importer runs while it reads the next chunk.

A reference that cannot be a URL (empty, over 2 KB) is skipped, and counted when its
revision is new; any other text is kept and refused, with its reason, by the fetch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from catalog.models import SourceStatus, utcnow
from pipeline.sources.refs import normalize_ref, url_digest

STAGE = "shotline_import_refs"
_SOURCES_COLUMNS = "(url_sha256, url, status, details, attempts, created_at, updated_at)"
# A staged reference's revision: the one this run created for its product and content.
_NEW_REVISIONS = (
    f"FROM {STAGE} st JOIN products p ON p.brand_id = :b AND p.sku = st.key "
    "JOIN product_revisions r ON r.product_id = p.id AND r.content_hash = st.hash "
    "AND r.import_run_id = :run "
)


class ImportRefs:
    """Stages the references of one run's products; ``write`` writes a staged batch once its
    revisions exist; ``skipped`` counts the unusable cells of new revisions at the end.
    Everything happens in the caller's transaction."""

    def __init__(
        self, session: Session, brand_id: int, run_id: int, base_dir: Path | str | None
    ) -> None:
        self.session = session
        conn = session.connection()
        self.pg = conn.dialect.name == "postgresql"
        self.dbapi: Any = conn.connection.driver_connection
        self.brand_id, self.run_id, self.base_dir = brand_id, run_id, base_dir
        self.now = utcnow()
        self.seq = 0  # staged references so far: their order, for the inserts
        self.batches = 0
        self.bad = 0  # unusable cells staged (counted at the end if their revision is new)
        self.sources_new = 0
        self._analyzed_at = 0  # sources_new at the last ANALYZE
        session.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
        session.execute(
            text(
                f"CREATE TEMPORARY TABLE {STAGE} (batch INTEGER NOT NULL, n INTEGER NOT NULL, "
                "key TEXT NOT NULL, hash TEXT NOT NULL, pos INTEGER NOT NULL, digest TEXT, "
                "raw TEXT NOT NULL)" + (" ON COMMIT DROP" if self.pg else "")
            )
        )
        session.execute(text(f"CREATE INDEX {STAGE}_batch ON {STAGE} (batch)"))

    def add(self, products: Iterable[tuple[str, str, Sequence[Any]]]) -> tuple[int, dict[str, str]]:
        """Stage ``(key, content hash, images)`` of products with new content, as a batch:
        ``(batch, {digest: URL})`` for ``write``."""
        self.batches += 1
        batch = self.batches
        rows: list[tuple[Any, ...]] = []
        urls: dict[str, str] = {}  # digest -> URL, in first-reference order
        base = self.base_dir
        seq = self.seq
        for key, digest, images in products:
            for pos, raw in enumerate(images, start=1):
                url = normalize_ref(raw, base) if isinstance(raw, str) else None
                seq += 1
                if url is None:
                    self.bad += 1
                    cell = raw if isinstance(raw, str) else ""
                    rows.append((batch, seq, key, digest, pos, None, cell))
                    continue
                sha = url_digest(url)
                urls.setdefault(sha, url)
                rows.append((batch, seq, key, digest, pos, sha, raw))
        self.seq = seq
        if not rows:
            pass
        elif self.pg:
            with self.dbapi.cursor() as cur, cur.copy(f"COPY {STAGE} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self.dbapi.executemany(f"INSERT INTO {STAGE} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return batch, urls

    def write(self, batch: int, urls: dict[str, str]) -> None:
        """The batch's new ``pending`` source images (existing ones are kept), then its
        references to the revisions this run created. Fresh revisions have no references
        yet (no other transaction can see them to add any): no conflict check. Both go in
        reference order, so every index but the URL digest's grows at its end."""
        if not urls:
            return
        if self.pg:
            cur = self.dbapi.execute(
                f"INSERT INTO source_images {_SOURCES_COLUMNS} "
                "SELECT d, u, %(pending)s, CAST('{}' AS JSONB), 0, %(now)s, %(now)s "
                "FROM unnest(CAST(%(d)s AS TEXT[]), CAST(%(u)s AS TEXT[])) "
                "WITH ORDINALITY AS t(d, u, n) ORDER BY n ON CONFLICT (url_sha256) DO NOTHING",
                {
                    "d": list(urls),
                    "u": list(urls.values()),
                    "pending": SourceStatus.pending.value,
                    "now": self.now,
                },
            )
            self.sources_new += int(cur.rowcount or 0)
            if self.sources_new > 2 * self._analyzed_at + 1000:
                # Fresh rows are invisible to the planner until analyzed (the join below
                # would hash the whole table each chunk): analyzed as the table doubles.
                self._analyzed_at = self.sources_new
                self.session.execute(text("ANALYZE source_images (url_sha256)"))
        else:
            self.dbapi.executemany(
                f"INSERT INTO source_images {_SOURCES_COLUMNS} VALUES (?, ?, ?, '{{}}', 0, ?, ?) "
                "ON CONFLICT (url_sha256) DO NOTHING",
                [(d, u, SourceStatus.pending.value, self.now, self.now) for d, u in urls.items()],
            )
        self.session.execute(
            text(
                "INSERT INTO source_image_refs "
                "(product_revision_id, source_image_id, position, raw, source_line) "
                f"SELECT r.id, si.id, st.pos, st.raw, r.source_line {_NEW_REVISIONS}"
                "JOIN source_images si ON si.url_sha256 = st.digest "
                "WHERE st.batch = :k ORDER BY r.id, st.pos"
            ),
            {"b": self.brand_id, "run": self.run_id, "k": batch},
        )

    def replace(
        self, keys: Sequence[str], products: Iterable[tuple[str, str, Sequence[Any]]]
    ) -> None:
        """Products whose rows were not adjacent, merged (their first fragment's revision and
        its references are gone, ``ImportStore.merge_fragments``): the fragments' staged
        references give way to the merged product's."""
        for start in range(0, len(keys), 500):
            batch = list(keys[start : start + 500])
            params = {f"k{i}": k for i, k in enumerate(batch)}
            names = ", ".join(f":k{i}" for i in range(len(batch)))
            self.session.execute(text(f"DELETE FROM {STAGE} WHERE key IN ({names})"), params)
        self.write(*self.add(products))

    def skipped(self) -> int:
        """Unusable cells (empty, over 2 KB) of the revisions this run created."""
        skipped = 0
        if self.bad:
            skipped = int(
                self.session.execute(
                    text(f"SELECT count(*) {_NEW_REVISIONS}WHERE st.digest IS NULL"),
                    {"b": self.brand_id, "run": self.run_id},
                ).scalar_one()
            )
        if not self.pg:
            self.session.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
        return skipped
