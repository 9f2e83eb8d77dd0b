"""Catalog import benchmark: a Shopify-style CSV of N rows, imported, then re-imported unchanged.

    .venv/bin/python tests/benchmarks/bench_import.py --rows 1000000 \
        --db postgresql://postgres@127.0.0.1:5432/test

``--db`` names a server: the benchmark creates (and drops) its own database there, or uses
a SQLite file URL as given. On Postgres the same file is also loaded with psql's ``\\copy``
into a table of text columns, in the same run, as the floor to compare against: the table
reports each pass as a multiple of it. Each pass runs in a fresh child process so its peak RSS is
its own. Prints a table and writes JSON (default ``var/bench/import.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

COLUMNS = [
    "Handle", "Title", "Body (HTML)", "Vendor", "Type", "Tags", "Published",
    "Option1 Name", "Option1 Value", "Option2 Name", "Option2 Value",
    "Variant SKU", "Variant Grams", "Variant Inventory Qty", "Variant Price",
    "Variant Compare At Price", "Variant Barcode", "Image Src", "Image Position",
    "Image Alt Text", "Variant Image", "Status",
]  # fmt: skip
COLORS = ["Red", "Navy", "Sage", "Black"]
SIZES = ["S", "M", "L"]


def generate_csv(path: Path, rows: int, seed_offset: int = 0) -> int:
    """Products of 2 colours x 3 sizes (6 variant rows) plus one image continuation row."""
    products = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        n = 0
        while n < rows:
            p = products + seed_offset
            handle = f"product-{p}"
            colors = (COLORS[p % 4], COLORS[(p + 1) % 4])
            variants = [(c, s) for c in colors for s in SIZES]
            for i, (color, size) in enumerate(variants):
                sku = f"SKU-{p}-{color[:3].upper()}-{size}"
                vimg = f"https://cdn.example.com/p/{p}-{color}.jpg"
                if i == 0:
                    row = [
                        handle, f"Organic Tee {p}",
                        f"<p>Soft organic cotton tee no. {p}.</p>\n<ul><li>Relaxed fit</li></ul>",
                        "ACME", "Shirts", "cotton, summer, tee", "TRUE", "Color", color, "Size",
                        size, sku, "200", str(p % 50), "19.99", "", f"400{p:09d}",
                        f"https://cdn.example.com/p/{p}-1.jpg", "1", "front", vimg, "active",
                    ]  # fmt: skip
                else:
                    row = [
                        handle, "", "", "", "", "", "", "", color, "", size, sku, "200",
                        str((p + i) % 50), "19.99", "", f"400{p:09d}", "", "", "", vimg, "",
                    ]  # fmt: skip
                w.writerow(row)
                n += 1
                if n >= rows:
                    break
            if n < rows:
                img = [handle] + [""] * (len(COLUMNS) - 1)
                img[COLUMNS.index("Image Src")] = f"https://cdn.example.com/p/{p}-2.jpg"
                img[COLUMNS.index("Image Position")] = "2"
                w.writerow(img)
                n += 1
            products += 1
    return products


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def copy_baseline(db_url: str, csv_path: Path) -> float | None:
    r"""Seconds for psql's ``\copy`` of the file into an unlogged table of text columns."""
    if not db_url.startswith("postgresql"):
        return None
    import subprocess

    url = db_url.replace("postgresql+psycopg://", "postgresql://")
    cols = ", ".join(f"c{i} text" for i in range(len(COLUMNS)))
    subprocess.run(["psql", url, "-qc", f"CREATE UNLOGGED TABLE bench_copy ({cols})"], check=True)
    t0 = time.perf_counter()
    subprocess.run(
        ["psql", url, "-qc", f"\\copy bench_copy FROM '{csv_path}' WITH (FORMAT csv, HEADER)"],
        check=True,
    )
    wall = time.perf_counter() - t0
    subprocess.run(["psql", url, "-qc", "DROP TABLE bench_copy"], check=True)
    return wall


def _child(db_url: str, csv_path: str, out: Any) -> None:
    from catalog.db import make_engine, make_sessionmaker
    from catalog.importing.importer import import_catalog
    from pipeline.brand.loader import find_brand

    try:
        brand = find_brand(ROOT / "samples" / "brands", "acme")
        engine = make_engine(db_url)
        t0 = time.perf_counter()
        summary = import_catalog(make_sessionmaker(engine), Path(csv_path), brand)
        wall = time.perf_counter() - t0
        engine.dispose()
        out.put({"wall_s": wall, "peak_rss_bytes": _peak_rss_bytes(), **summary.to_json()})
    except BaseException:
        out.put({"failed": traceback.format_exc()})
        raise


def run_pass(db_url: str, csv_path: Path) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # a fresh interpreter: the peak RSS is this pass alone
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(db_url, str(csv_path), q))
    proc.start()
    result = q.get()
    proc.join()
    if "failed" in result:
        raise SystemExit(f"import pass failed:\n{result['failed']}")
    return result


def _prepare_db(db: str) -> tuple[str, str | None]:
    from catalog import migrate
    from catalog.db import normalize_url

    if db.startswith("sqlite"):
        migrate.upgrade(db)
        return db, None
    import psycopg

    admin = normalize_url(db).replace("postgresql+psycopg://", "postgresql://")
    name = f"shotline_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rsplit('/', 1)[0]}/{name}"
    migrate.upgrade(url)
    return url, name


def _drop_db(db: str, name: str) -> None:
    import psycopg

    from catalog.db import normalize_url

    admin = normalize_url(db).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "import.json")
    ap.add_argument("--keep-db", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="shotline-bench-"))
    csv_path = tmp / "catalog.csv"
    t0 = time.perf_counter()
    products = generate_csv(csv_path, args.rows)
    gen_s = time.perf_counter() - t0
    url, dbname = _prepare_db(args.db)
    try:
        copy_s = copy_baseline(url, csv_path)
        first = run_pass(url, csv_path)
        second = run_pass(url, csv_path)
    finally:
        if dbname and not args.keep_db:
            _drop_db(args.db, dbname)
        csv_path.unlink(missing_ok=True)
        tmp.rmdir()

    passes = {"import": first, "reimport_unchanged": second}
    print(f"{args.rows:,} rows, {products:,} products, {csv_path.name} generated in {gen_s:.1f}s")
    print(f"cpus={os.cpu_count()} db={url.split('@')[-1]}")
    if copy_s is not None:
        print(f"psql \\copy of the same file: {copy_s:.2f}s")
    header = f"{'pass':<20}{'wall s':>9}{'x copy':>8}{'rows/s':>12}{'peak RSS MB':>13}"
    print(header + f"{'new revs':>10}{'unchanged':>11}{'errors':>8}")
    for name, r in passes.items():
        rate = r["rows_total"] / r["wall_s"] if r["wall_s"] else 0.0
        r["rows_per_s"] = rate
        r["x_copy"] = r["wall_s"] / copy_s if copy_s else None
        ratio = f"{r['x_copy']:>8.1f}" if copy_s else f"{'-':>8}"
        print(
            f"{name:<20}{r['wall_s']:>9.2f}{ratio}{rate:>12,.0f}"
            f"{r['peak_rss_bytes'] / 2**20:>13.0f}"
            f"{r['revisions_new']:>10,}{r['unchanged']:>11,}{r['errors']:>8,}"
        )
    report = {
        "rows": args.rows,
        "products": products,
        "cpus": os.cpu_count(),
        "db": url.split("@")[-1],
        "copy_s": copy_s,
        "passes": passes,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
