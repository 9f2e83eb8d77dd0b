"""An import's image references, staged as its products are read.

Each product staged with new content stages its ``images`` (the ``product_revisions.data``
contract: position order, variant images among them, so every format and merged fragments
are handled the same way) keyed by product key and content hash. Each chunk's URLs go into
``source_images`` at once: on Postgres in the background, while the importer reads the next
chunk, so the server's index upkeep overlaps Python's parsing instead of following it. Once
the run's revisions exist, one ``INSERT ... SELECT`` joins the staged references to them.

A reference that cannot be a URL (empty, over 2 KB) is skipped, and counted when its
revision is new; any other text is kept and refused, with its reason, by the fetch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from catalog.models import SourceStatus, utcnow
from pipeline.sources.refs import normalize_ref, url_digest

STAGE = "shotline_import_refs"
# Fresh source_images rows past this many: refresh the planner's statistics before the join.
_ANALYZE_AFTER = 1000
_SOURCES_COLUMNS = "(url_sha256, url, status, details, attempts, created_at, updated_at)"


class ImportRefs:
    """Stages the references of one run's products; ``finish`` writes them (``(written,
    skipped)``) once ``ImportStore.apply`` has made the revisions. Everything happens in the
    caller's transaction; on Postgres one chunk's ``source_images`` insert runs on a worker
    thread (the connection serializes statements; ``wait`` is called before any other)."""

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
        self.bad = 0  # unusable cells staged (counted at the end if their revision is new)
        self.sources_new = 0
        self._worker = ThreadPoolExecutor(1, "import-refs") if self.pg else None
        self._pending: Future[int] | None = None
        session.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
        session.execute(
            text(
                f"CREATE TEMPORARY TABLE {STAGE} (n INTEGER NOT NULL, key TEXT NOT NULL, "
                "hash TEXT NOT NULL, pos INTEGER NOT NULL, digest TEXT, raw TEXT NOT NULL)"
                + (" ON COMMIT DROP" if self.pg else "")
            )
        )

    def wait(self) -> None:
        """Let the background insert finish (and raise what it raised)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.sources_new += pending.result()

    def add(self, products: Iterable[tuple[str, str, Sequence[Any]]]) -> None:
        """``(key, content hash, images)`` of products staged with new content."""
        self.wait()
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
                    rows.append((seq, key, digest, pos, None, raw if isinstance(raw, str) else ""))
                    continue
                sha = url_digest(url)
                urls.setdefault(sha, url)
                rows.append((seq, key, digest, pos, sha, raw))
        self.seq = seq
        if not rows:
            return
        if self.pg:
            with self.dbapi.cursor() as cur, cur.copy(f"COPY {STAGE} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            if urls and self._worker is not None:
                self._pending = self._worker.submit(self._insert_sources_pg, urls)
            return
        self.dbapi.executemany(f"INSERT INTO {STAGE} VALUES (?, ?, ?, ?, ?, ?)", rows)
        if urls:
            self.sources_new += self._insert_sources_sqlite(urls)

    def _insert_sources_pg(self, urls: dict[str, str]) -> int:
        """New ``pending`` source images for ``urls`` (existing ones are kept), in the order
        given: ids follow the file, so the id index grows at its end."""
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
        return int(cur.rowcount or 0)

    def _insert_sources_sqlite(self, urls: dict[str, str]) -> int:
        before = self.dbapi.total_changes
        self.dbapi.executemany(
            f"INSERT INTO source_images {_SOURCES_COLUMNS} VALUES (?, ?, ?, '{{}}', 0, ?, ?) "
            "ON CONFLICT (url_sha256) DO NOTHING",
            [(d, u, SourceStatus.pending.value, self.now, self.now) for d, u in urls.items()],
        )
        return int(self.dbapi.total_changes - before)

    def replace(
        self, keys: Sequence[str], products: Iterable[tuple[str, str, Sequence[Any]]]
    ) -> None:
        """Products whose rows were not adjacent, merged: their fragments' references give way
        to the merged product's."""
        self.wait()
        for start in range(0, len(keys), 500):
            batch = list(keys[start : start + 500])
            params = {f"k{i}": k for i, k in enumerate(batch)}
            names = ", ".join(f":k{i}" for i in range(len(batch)))
            self.session.execute(text(f"DELETE FROM {STAGE} WHERE key IN ({names})"), params)
        self.add(products)

    def finish(self) -> tuple[int, int]:
        """Write the references of the revisions this run created: ``(written, skipped)``."""
        self.wait()
        if self._worker is not None:
            self._worker.shutdown()
        run = self.session.execute
        if self.pg and self.seq:  # temp tables are never auto-analyzed: the joins need stats
            run(text(f"ANALYZE {STAGE} (key, hash, digest)"))
            if self.sources_new > _ANALYZE_AFTER:
                run(text("ANALYZE source_images (url_sha256)"))
        new_revisions = (
            f"FROM {STAGE} st JOIN products p ON p.brand_id = :b AND p.sku = st.key "
            "JOIN product_revisions r ON r.product_id = p.id AND r.content_hash = st.hash "
            "AND r.import_run_id = :run "
        )
        params = {"b": self.brand_id, "run": self.run_id}
        written = 0
        if self.seq:
            # Fresh revisions have no references yet (no other transaction can see them to
            # add any): no conflict check. In (revision, position) order, the indexes grow
            # at their end.
            result = run(
                text(
                    "INSERT INTO source_image_refs "
                    "(product_revision_id, source_image_id, position, raw, source_line) "
                    f"SELECT r.id, si.id, st.pos, st.raw, r.source_line {new_revisions}"
                    "JOIN source_images si ON si.url_sha256 = st.digest "
                    "WHERE true ORDER BY r.id, st.pos"
                ),
                params,
            )
            written = int(getattr(result, "rowcount", 0) or 0)
        skipped = 0
        if self.bad:
            skipped = int(
                run(
                    text(f"SELECT count(*) {new_revisions}WHERE st.digest IS NULL"), params
                ).scalar_one()
            )
        if not self.pg:
            run(text(f"DROP TABLE IF EXISTS {STAGE}"))
        return written, skipped

    def close(self) -> None:
        """Stop the worker (after a failure: its statement's error was or will be raised)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
