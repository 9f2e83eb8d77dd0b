"""Embedding search without pgvector: ``lineage --like`` and review's near-duplicate flag.

Seeds N published assets of one brand with random unit embeddings (float16 bytes, as the
gate stores them) on SQLite (default) or Postgres, then times ``nearest_assets`` (a chunked
numpy scan over the brand's assets) and ``near_duplicates`` for a product with M shots.

    .venv/bin/python tests/benchmarks/bench_embeddings.py --n 20000 --dim 768
    .venv/bin/python tests/benchmarks/bench_embeddings.py --db postgresql+psycopg://...

Writes JSON to var/bench/bench_embeddings.json (or ``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.embeddings import near_duplicates, nearest_assets, to_bytes
from catalog.models import Asset, Shot, ShotEmbedding, utcnow
from tests.factories import make_brand, make_product, make_shot


def seed(url: str, n: int, dim: int, per_product: int) -> tuple[int, list[int]]:
    """N published shots (the first ``per_product`` of one product); returns the first asset
    id and that product's shot ids."""
    rng = np.random.default_rng(0)
    engine = make_engine(url)
    with make_sessionmaker(engine).begin() as s:
        rev = make_product(s, make_brand(s))
        proto = make_shot(s, rev, template="t-0", state="published")
        cols = {c.key: getattr(proto, c.key) for c in Shot.__table__.columns if c.key != "id"}
        rows = [{**cols, "template_name": f"t-{i}"} for i in range(1, n)]
        s.execute(insert(Shot), rows)
        ids = [proto.id, *s.scalars(select(Shot.id).where(Shot.id != proto.id).order_by(Shot.id))]
        now = utcnow()
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        s.execute(
            insert(ShotEmbedding),
            [
                {
                    "shot_id": sid,
                    "clip_model": "bench",
                    "dim": dim,
                    "vector": to_bytes(v),
                    "created_at": now,
                }
                for sid, v in zip(ids, vecs, strict=True)
            ],
        )
        s.execute(
            insert(Asset),
            [
                {
                    "shot_id": sid,
                    "backend": "local",
                    "key": f"bench/{sid}.png",
                    "sha256": "0" * 64,
                    "size_bytes": 1,
                    "content_type": "image/png",
                    "published_at": now,
                }
                for sid in ids
            ],
        )
        first = s.scalar(select(Asset.id).where(Asset.shot_id == proto.id))
    engine.dispose()
    assert first is not None
    return first, ids[:per_product]


def timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--per-product", type=int, default=50)
    ap.add_argument("--db", default=None, help="database URL (default: a temp SQLite file)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json-out", type=Path, default=Path("var/bench/bench_embeddings.json"))
    args = ap.parse_args()
    url = args.db or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    migrate.upgrade(url)
    asset_id, product_shots = seed(url, args.n, args.dim, args.per_product)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        like = timed(lambda: nearest_assets(s, asset_id, k=10), args.repeat)
        dup = timed(lambda: near_duplicates(s, product_shots, 0.97), args.repeat)
    engine.dispose()
    # near_duplicates groups by product: here all N shots share one product, the worst case.
    result = {
        "db": engine.dialect.name,
        "n": args.n,
        "dim": args.dim,
        "bytes_per_vector": 2 * args.dim,
        "like_top10_s": statistics.median(like),
        "like_vectors_per_s": args.n / statistics.median(like),
        "near_dup_s_all_in_one_product": statistics.median(dup),
    }
    print(f"{'metric':<32} value")
    for k, v in result.items():
        print(f"{k:<32} {v:.4g}" if isinstance(v, float) else f"{k:<32} {v}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
