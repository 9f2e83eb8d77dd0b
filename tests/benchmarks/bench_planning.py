"""Planning benchmark: N products of 12 Color x Size variants, planned with the sample brand.

    .venv/bin/python tests/benchmarks/bench_planning.py --products 2000 \
        [--db postgresql://postgres@127.0.0.1:5432/test]

Measures the first plan (render, sanitize, count tokens, insert: 4 visual variants x 3
templates = 12 shots per product) and the idempotent re-plan (nothing new), each with the
process's CPU time beside its wall time. ``--db`` names a Postgres server (a database is
created and dropped) or defaults to a temporary SQLite file. On Postgres the floor is measured
in the same run: an ``INSERT ... SELECT`` of the planned rows into a copy of ``shots`` with the
same indexes and constraints (``LIKE shots INCLUDING ALL``), the cheapest way the same rows can
be written; the first plan is reported as a multiple of it (the target: <= 20x). Prints a table
and writes JSON (default ``var/bench/planning.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

COLOURS = ["Red", "Blue", "Green", "Black"]
SIZES = ["S", "M", "L"]


def product_data(i: int) -> dict[str, Any]:
    variants = [
        {"sku": f"P{i}-{c}-{s}", "options": {"Color": c, "Size": s}, "line": 2 + 12 * i + j}
        for j, (c, s) in enumerate((c, s) for c in COLOURS for s in SIZES)
    ]
    return {
        "key": f"product-{i}",
        "title": f"Organic Tee {i}, compatible with Nike shorts",
        "body_html": f"<p>Soft organic cotton tee no. {i}.</p><ul><li>Relaxed fit</li></ul>",
        "vendor": "ACME",
        "product_type": "Shirts",
        "tags": ["cotton", "summer", "tee"],
        "options": ["Color", "Size"],
        "images": [],
        "variants": variants,
        "extra": {},
    }


def insert_select_floor(engine: Any) -> float:
    """Seconds to write the planned rows again with one ``INSERT ... SELECT`` into a copy of
    ``shots`` (same columns, defaults, indexes and constraints; its foreign keys are the one
    thing ``LIKE`` leaves out), the server doing all the work."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE shots_floor (LIKE shots INCLUDING ALL)"))
    with engine.begin() as conn:
        t0 = time.perf_counter()
        conn.execute(text("INSERT INTO shots_floor SELECT * FROM shots"))
    floor = time.perf_counter() - t0
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE shots_floor"))
    return floor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--products", type=int, default=1000)
    ap.add_argument("--db", default=None, help="postgresql://... server (default: SQLite)")
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "planning.json")
    args = ap.parse_args()

    import psycopg
    from rich.console import Console
    from rich.table import Table

    from catalog import migrate
    from catalog.brands import upsert_brand
    from catalog.db import make_engine, make_sessionmaker
    from catalog.models import Product, ProductRevision
    from catalog.planning import plan_shots
    from pipeline.brand.loader import load_brand
    from pipeline.settings import Settings

    tmp = tempfile.mkdtemp(prefix="bench-plan-")
    admin, dbname = None, None
    if args.db:
        admin = args.db
        dbname = f"bench_plan_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{dbname}"')
        url = admin.rsplit("/", 1)[0] + f"/{dbname}"
    else:
        url = f"sqlite:///{tmp}/plan.db"
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        brand = load_brand(ROOT / "samples" / "brands" / "acme.yaml")
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        t0 = time.perf_counter()
        with factory.begin() as s:
            row = upsert_brand(s, brand)
            for i in range(args.products):
                data = product_data(i)
                p = Product(brand_id=row.id, sku=data["key"])
                s.add(p)
                s.flush()
                digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
                rev = ProductRevision(product_id=p.id, revision=1, content_hash=digest, data=data)
                s.add(rev)
                s.flush()
                p.current_revision_id = rev.id
        seed_s = time.perf_counter() - t0

        results = []
        for label in ("first plan", "re-plan (idempotent)"):
            t0, c0 = time.perf_counter(), time.process_time()
            with factory.begin() as s:
                summary = plan_shots(s, brand, settings)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            results.append(
                {
                    "pass": label,
                    "seconds": round(dt, 3),
                    "cpu_seconds": round(cpu, 3),
                    "created": summary.created,
                    "existing": summary.existing,
                    "shots_per_s": round((summary.created + summary.existing) / dt, 1),
                }
            )
        floor_s = insert_select_floor(engine) if admin else None
        engine.dispose()
    finally:
        if admin and dbname:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    if floor_s is not None:
        results.append(
            {
                "pass": "floor: INSERT ... SELECT",
                "seconds": round(floor_s, 3),
                "cpu_seconds": None,
                "created": results[0]["created"],
                "existing": 0,
                "shots_per_s": round(results[0]["created"] / floor_s, 1),
            }
        )
    cols = ("pass", "seconds", "cpu_seconds", "created", "existing", "shots_per_s")
    table = Table(title=f"planning {args.products} products ({url.split(':')[0]})")
    for col in cols:
        table.add_column(col)
    for r in results:
        table.add_row(*(str(r[c]) for c in cols))
    console = Console()
    console.print(table)
    ratio = None
    if floor_s:
        ratio = {
            "wall": round(results[0]["seconds"] / floor_s, 1),
            "cpu": round(results[0]["cpu_seconds"] / floor_s, 1),
        }
        console.print(
            f"first plan = {ratio['wall']}x the INSERT ... SELECT floor in wall time "
            f"({ratio['cpu']}x counting the planner's own CPU seconds); target <= 20x"
        )
    out = {
        "benchmark": "planning",
        "products": args.products,
        "database": url.split(":")[0],
        "seed_seconds": round(seed_s, 3),
        "results": results,
        "plan_over_floor": ratio,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
