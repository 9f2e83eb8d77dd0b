"""Set-based writes for an import: stage products, then upsert them with a few statements.

Products are staged in a temporary table (Postgres: ``COPY``; SQLite: ``executemany``)
and applied with ``INSERT ... SELECT ... ON CONFLICT`` / ``UPDATE ... FROM``, never one
ORM object per row. Everything happens in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from catalog.importing.csv_source import RowError
from catalog.importing.product_content import ProductAcc
from catalog.models import ImportRowError, utcnow

STAGE = "shotline_import_stage"
# Namespace for pg_advisory_xact_lock(ns, brand_id): one import per brand at a time.
_LOCK_NS = 0x5107


@dataclass
class ApplyResult:
    products: int
    revisions_new: int
    changed: int

    @property
    def unchanged(self) -> int:
        return self.products - self.changed


class ImportStore:
    def __init__(self, session: Session, brand_id: int, run_id: int) -> None:
        self.session = session
        self.brand_id = brand_id
        self.run_id = run_id
        self.conn = session.connection()
        self.pg = self.conn.dialect.name == "postgresql"
        self.now: datetime = utcnow()
        self.dbapi: Any = self.conn.connection.driver_connection
        if self.pg:
            self._exec("SELECT pg_advisory_xact_lock(:ns, :b)", ns=_LOCK_NS, b=brand_id)
            # The apply joins hash the whole staged file; let them do it in memory.
            self._exec("SET LOCAL work_mem = '128MB'")
        self._exec(f"DROP TABLE IF EXISTS {STAGE}")
        extra = "ON COMMIT DROP" if self.pg else ""
        self._exec(
            f"CREATE TEMPORARY TABLE {STAGE} (key TEXT NOT NULL, seq INTEGER NOT NULL, "
            f"line INTEGER NOT NULL, hash TEXT NOT NULL, data TEXT NOT NULL, "
            f"batch INTEGER NOT NULL DEFAULT 0) {extra}"
        )
        # Each chunk's rows are applied on their own: found by batch, not by a table scan.
        self._exec(f"CREATE INDEX {STAGE}_batch ON {STAGE} (batch)")
        self.batches = 0  # chunks staged so far
        self._analyzed_at = 0  # product_revisions rows of this run at the last ANALYZE
        self._fresh = 0  # revisions this run has inserted so far (when to ANALYZE)

    def _exec(self, sql: str, **params: Any) -> Any:
        return self.session.execute(text(sql), params)

    # -- staging ------------------------------------------------------------------------

    def stage(self, rows: Sequence[tuple[str, int, int, str, str]]) -> int:
        """``(key, fragment seq, line, content hash, data JSON)`` rows, as the next batch
        (returned, for ``apply_batch``)."""
        self.batches += 1
        batch = self.batches
        if not rows:
            return batch
        if self.pg:
            with self.dbapi.cursor() as cur:
                copy_sql = f"COPY {STAGE} (key, seq, line, hash, data, batch) FROM STDIN"
                with cur.copy(copy_sql) as copy:
                    for row in rows:
                        copy.write_row((*row, batch))
        else:
            self.dbapi.executemany(
                f"INSERT INTO {STAGE} VALUES (?, ?, ?, ?, ?, ?)", [(*r, batch) for r in rows]
            )
        return batch

    def row_errors(self, errors: Iterable[RowError]) -> int:
        rows = [
            {
                "import_run_id": self.run_id,
                "line_number": e.line,
                "column": e.column[:200] if e.column else None,
                "reason": e.reason,
                "raw_row": e.raw,
            }
            for e in errors
        ]
        if rows:
            self.session.execute(insert(ImportRowError), rows)
        return len(rows)

    def merge_fragments(self, keys: Sequence[str]) -> list[tuple[str, str, list[str]]]:
        """Products whose rows were not adjacent were staged in pieces: fold each into one.
        Returns ``(key, content hash, images)`` of the merged products."""
        out: list[tuple[str, str, list[str]]] = []
        for start in range(0, len(keys), 500):
            batch = list(keys[start : start + 500])
            params = {f"k{i}": k for i, k in enumerate(batch)}
            names = ", ".join(f":k{i}" for i in range(len(batch)))
            found = self._exec(
                f"SELECT key, line, data FROM {STAGE} WHERE key IN ({names}) ORDER BY key, seq",
                **params,
            ).all()
            merged: dict[str, ProductAcc] = {}
            for key, line, data in found:
                # Staged without data: identical to the current revision, so read that.
                content = json.loads(data) if data else self._current_data(key)
                acc = ProductAcc.from_data(content, line)
                if key in merged:
                    merged[key].merge(acc)
                else:
                    merged[key] = acc
            self._exec(f"DELETE FROM {STAGE} WHERE key IN ({names})", **params)
            # A first fragment was applied with its chunk: its revision (and references)
            # give way to the merged product's.
            fragment_revisions = (
                "SELECT r.id FROM product_revisions r JOIN products p ON p.id = r.product_id "
                f"WHERE p.brand_id = :b AND r.import_run_id = :run AND p.sku IN ({names})"
            )
            ids = {"b": self.brand_id, "run": self.run_id, **params}
            self._exec(
                "DELETE FROM source_image_refs "
                f"WHERE product_revision_id IN ({fragment_revisions})",
                **ids,
            )
            self._exec(f"DELETE FROM product_revisions WHERE id IN ({fragment_revisions})", **ids)
            rows = [(k, 0, acc.line, *acc.encode()) for k, acc in merged.items()]
            self.apply_batch(self.stage(rows))
            out.extend(
                (k, digest, acc.images)
                for (k, _, _, digest, _), acc in zip(rows, merged.values(), strict=True)
            )
        return out

    def current_hashes(self) -> dict[str, str]:
        rows = self._exec(
            "SELECT p.sku, r.content_hash FROM products p "
            "JOIN product_revisions r ON r.id = p.current_revision_id WHERE p.brand_id = :b",
            b=self.brand_id,
        )
        return {key: digest for key, digest in rows}

    def _current_data(self, key: str) -> dict[str, Any]:
        data = self._exec(
            "SELECT r.data FROM products p JOIN product_revisions r "
            "ON r.id = p.current_revision_id WHERE p.brand_id = :b AND p.sku = :k",
            b=self.brand_id,
            k=key,
        ).scalar_one()
        return json.loads(data) if isinstance(data, str) else dict(data)

    # -- apply ----------------------------------------------------------------------------

    def apply_batch(self, batch: int) -> None:
        """The products and new revisions of one staged batch (a chunk of the file), while
        the next chunk is read. A product's later fragments (rows not adjacent to its first
        ones) wait for ``merge_fragments``; a first fragment's revision is replaced there."""
        p = {"b": self.brand_id, "run": self.run_id, "now": self.now, "k": batch}
        self._exec(
            "INSERT INTO products (brand_id, sku, created_at, updated_at) "
            f"SELECT :b, s.key, :now, :now FROM {STAGE} s WHERE s.batch = :k AND s.seq = 0 "
            "ON CONFLICT (brand_id, sku) DO NOTHING",
            **p,
        )
        data = "CAST(f.data AS JSONB)" if self.pg else "f.data"
        # INSERT first and WITH inside: sqlite3 reports no rowcount for a WITH-led statement.
        self._fresh += self._exec(
            "INSERT INTO product_revisions "
            "(product_id, revision, content_hash, data, import_run_id, source_line, created_at) "
            "WITH cand AS ("
            "  SELECT pr.id AS product_id, s.hash, s.data, s.line "
            f"  FROM {STAGE} s JOIN products pr ON pr.brand_id = :b AND pr.sku = s.key"
            "  WHERE s.batch = :k AND s.seq = 0"
            "), fresh AS ("
            "  SELECT c.* FROM cand c LEFT JOIN product_revisions r "
            "  ON r.product_id = c.product_id AND r.content_hash = c.hash WHERE r.id IS NULL"
            "), latest AS ("
            "  SELECT r.product_id, MAX(r.revision) AS rev FROM product_revisions r "
            "  JOIN fresh f ON f.product_id = r.product_id GROUP BY r.product_id"
            ") "
            f"SELECT f.product_id, COALESCE(l.rev, 0) + 1, f.hash, {data}, :run, f.line, :now "
            "FROM fresh f LEFT JOIN latest l ON l.product_id = f.product_id",
            **p,
        ).rowcount
        if self.pg and self._fresh > 2 * self._analyzed_at + 1000:
            # Fresh rows are invisible to the planner until analyzed; stale stats turn the
            # joins into nested loops over whole tables. Analyzed as the tables double, and
            # only the join columns (a column list leaves autovacuum's full ANALYZE due).
            self._analyzed_at = self._fresh
            self._exec("ANALYZE products (brand_id, sku)")
            self._exec("ANALYZE product_revisions (product_id, content_hash, import_run_id)")

    def apply(self) -> ApplyResult:
        """After every batch (and ``merge_fragments``): point each product at the revision
        with its current content, and count."""
        p = {"b": self.brand_id, "run": self.run_id, "now": self.now}
        if self.pg:
            # Temp tables are never auto-analyzed; without stats the join below goes
            # nested-loop. Only the join columns: sampling the data costs more than the rest.
            self._exec(f"ANALYZE {STAGE} (key, hash)")
        total = self._exec(f"SELECT count(*) FROM {STAGE}").scalar_one()
        # The new one, or an older one when the content went back to it.
        changed = self._exec(
            "UPDATE products SET current_revision_id = r.id, updated_at = :now "
            f"FROM {STAGE} s JOIN product_revisions r ON r.content_hash = s.hash "
            "WHERE products.brand_id = :b AND products.sku = s.key "
            "AND r.product_id = products.id "
            "AND (products.current_revision_id IS NULL OR products.current_revision_id <> r.id)",
            **p,
        ).rowcount
        new = self._exec(
            "SELECT count(*) FROM product_revisions WHERE import_run_id = :run", **p
        ).scalar_one()
        return ApplyResult(products=int(total), revisions_new=int(new), changed=int(changed))

    def close(self) -> None:
        if not self.pg:
            self._exec(f"DROP TABLE IF EXISTS {STAGE}")
