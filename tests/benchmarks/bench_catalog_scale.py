"""Catalog-scale benchmark (issue 30): every catalog command at N shots on Postgres, beside the
INSERT ... SELECT floor.

    .venv/bin/python tests/benchmarks/bench_catalog_scale.py [--shots 300000] [--templates 3] \
        [--plan-products 1000] [--db postgresql://postgres@127.0.0.1:5432/test] [--timeout 300]

Seeds one brand, one import run, ``shots / templates`` products (one revision each) and
``shots`` gated shots waiting for review, directly with set-based SQL (generation is not
under test), in a fresh database that is dropped afterwards, then ``ANALYZE``. The floor is
one ``INSERT ... SELECT`` of every seeded shot into a copy of ``shots`` with its indexes
(``LIKE shots INCLUDING ALL``): what writing those rows costs the server with no Python in
the way. Then each command runs as its own ``shotline`` process, the way a user runs it, with
its wall time, CPU time (user + sys) and peak RSS (``wait4``):

- ``shotline --help``; ``status``; ``lineage SKU`` (a variant sku) and ``lineage PRODUCT``;
- ``review list --json --all`` (every pending shot, streamed) and ``review list --json``
  (the default page); ``review sheet`` (the default page of 500, no images stored);
- ``review export --out FILE`` (every review state); ``lineage --import-run 1 --json``;
- ``review approve --all-pending --template t1`` (a third of the shots; the publish messages
  go to a scratch Redis database, emptied afterwards; nothing is published);
- ``plan --brand acme``: ``--plan-products`` products of the sample brand (12 variants in 4
  colours: 12 shots each), seeded in SQL, planned from nothing; its own floor is an
  ``INSERT ... SELECT`` of the rows it wrote (target: plan <= 20x that floor).

A command past ``--timeout`` is killed and recorded as such. Prints a table and writes JSON
(default ``var/bench/catalog_scale.json``). ``--legacy`` runs the list without ``--all``
(older code, where every row was the default); ``--only STEP`` (repeatable) runs just those
steps, e.g. ``--only "review export"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SCORES = (
    '[{"name": "nsfw", "kind": "safety", "score": 0.08, "threshold": 0.5, "triggered": false},'
    ' {"name": "product match", "kind": "product_match", "score": 0.31, "threshold": 0.2,'
    ' "triggered": false}]'
)

SEED_SQL = (
    """
INSERT INTO brands (name, config_digest, version, config, created_at, updated_at)
VALUES ('bench', repeat('0', 64), 1, '{"name": "bench", "reviewers": ["bench"]}', now(), now());
INSERT INTO import_runs (brand_id, source_uri, file_sha256, format, status, rows_total,
    rows_error, products_seen, revisions_new, unchanged, warnings, started_at, finished_at)
SELECT id, 'bench.csv', repeat('a', 64), 'shopify', 'succeeded', %(products)s, 0,
    %(products)s, %(products)s, 0, '[]', now(), now() FROM brands WHERE name = 'bench';
INSERT INTO products (brand_id, sku, created_at, updated_at)
SELECT b.id, 'prod-' || lpad(g::text, 7, '0'), now(), now()
FROM brands b, generate_series(1, %(products)s) g WHERE b.name = 'bench';
INSERT INTO product_revisions (product_id, revision, content_hash, data, import_run_id,
    source_line, created_at)
SELECT p.id, 1, md5(p.sku) || md5(p.sku),
    jsonb_build_object('key', p.sku, 'title', 'Organic tee ' || p.sku, 'options', '["Color"]',
        'variants', jsonb_build_array(jsonb_build_object('sku', p.sku || '-RED',
            'options', jsonb_build_object('Color', 'Red'), 'line', p.id + 1))),
    (SELECT max(id) FROM import_runs), p.id + 1, now()
FROM products p;
UPDATE products SET current_revision_id = r.id FROM product_revisions r
WHERE r.product_id = products.id;
INSERT INTO shots (brand_id, product_revision_id, variant_key, variant, brand_config_digest,
    template_name, template_digest, prompt, negative_prompt, sanitizer_removals,
    prompt_warnings, seed, model_id, adapters, width, height, steps, guidance, scheduler,
    state, attempts, packshot, created_at, updated_at)
SELECT p.brand_id, r.id, 'Color=Red',
    jsonb_build_object('key', 'Color=Red', 'options', jsonb_build_object('Color', 'Red'),
        'sku', p.sku || '-RED', 'skus', jsonb_build_array(p.sku || '-RED'),
        'lines', jsonb_build_array(p.id + 1)),
    repeat('0', 64), 't' || t, repeat('1', 64),
    'studio photo of an organic tee, ' || p.sku || ', red, soft light, white background',
    'blurry, watermark', '[]', '[]', (r.id * 7 + t)::bigint, 'tiny', '[]', 64, 64, 2, 1.0,
    'euler', 'pending_review', 1, '{}', now(), now()
FROM product_revisions r JOIN products p ON p.id = r.product_id,
    generate_series(1, %(templates)s) t
ORDER BY r.id, t
LIMIT %(shots)s;
INSERT INTO filter_results (shot_id, current, policy_version, clip_model, scores, decision,
    reasons, created_at)
SELECT id, true, 'bench-1', 'tiny', '"""
    + SCORES
    + """', 'pending_review', '[]', now()
FROM shots;
ANALYZE;
"""
)


def seed(url: str, shots: int, templates: int) -> float:
    import psycopg

    products = -(-shots // templates)
    t0 = time.perf_counter()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in SEED_SQL.split(";\n"):
            if stmt.strip():
                conn.execute(
                    stmt,  # type: ignore[arg-type]
                    {"products": products, "templates": templates, "shots": shots},
                )
    return time.perf_counter() - t0


GNU_TIME = Path("/usr/bin/time")


def run_cli(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """One ``shotline`` process: wall, CPU (user+sys) and peak RSS, or killed at ``timeout``.

    Run under GNU time where it exists: a child forked straight from this process would count
    this process's memory (the copy before ``exec``) in its peak RSS; time's own is ~2 MB."""
    cmd = [sys.executable, "-c", "from tasks.cli import main; main()", *args]
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        if GNU_TIME.exists():
            cmd = [str(GNU_TIME), "-f", "%M %U %S", "-o", report.name, *cmd]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
            start_new_session=True,  # a kill takes the command and GNU time together
        )
        deadline = t0 + timeout
        killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        measured = report.read().strip().splitlines()
    rss_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime  # without GNU time
    if GNU_TIME.exists() and measured and not killed:
        kib, user, sys_s = measured[-1].split()
        rss_kib, cpu = int(kib), float(user) + float(sys_s)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    return {
        "command": "shotline " + " ".join(args),
        "exit": None if killed else proc.returncode,
        "killed_after_s": round(timeout, 1) if killed else None,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(rss_kib / 1024, 1),  # Linux reports KiB
        "stderr_tail": err[-300:] if (killed or proc.returncode) else "",
    }


PLAN_SEED_SQL = """
INSERT INTO products (brand_id, sku, created_at, updated_at)
SELECT b.id, 'product-' || lpad(g::text, 7, '0'), now(), now()
FROM brands b, generate_series(1, %(n)s) g WHERE b.name = 'acme';
INSERT INTO product_revisions (product_id, revision, content_hash, data, created_at)
SELECT p.id, 1, md5(p.sku) || md5(p.sku), jsonb_build_object(
        'key', p.sku, 'title', 'Organic Tee ' || p.sku || ', compatible with Nike shorts',
        'body_html', '<p>Soft organic cotton tee ' || p.sku || '.</p><ul><li>Relaxed fit</li></ul>',
        'vendor', 'ACME', 'product_type', 'Shirts', 'tags', '["cotton", "summer", "tee"]'::jsonb,
        'options', '["Color", "Size"]'::jsonb, 'images', '[]'::jsonb, 'extra', '{}'::jsonb,
        'variants', (SELECT jsonb_agg(jsonb_build_object('sku', p.sku || '-' || c || '-' || z,
                'options', jsonb_build_object('Color', c, 'Size', z)) ORDER BY c, z)
            FROM unnest(ARRAY['Red', 'Blue', 'Green', 'Black']) c,
                unnest(ARRAY['S', 'M', 'L']) z)),
    now()
FROM products p JOIN brands b ON b.id = p.brand_id WHERE b.name = 'acme';
UPDATE products SET current_revision_id = r.id FROM product_revisions r
WHERE r.product_id = products.id AND products.current_revision_id IS NULL;
ANALYZE
"""


def _psql(url: str, sql: str, params: dict[str, Any] | None = None) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        for stmt in sql.split(";\n"):
            if stmt.strip():
                conn.execute(stmt, params or {})  # type: ignore[arg-type]


def insert_select_floor(url: str, where: str = "true") -> tuple[float, int]:
    """Seconds for one ``INSERT ... SELECT`` of the shots matching ``where`` into a copy of
    ``shots`` with the same indexes and constraints, and how many rows it wrote."""
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE shots_floor (LIKE shots INCLUDING ALL)")
        t0 = time.perf_counter()
        cur = conn.execute(f"INSERT INTO shots_floor SELECT * FROM shots WHERE {where}")  # type: ignore[arg-type]
        floor = time.perf_counter() - t0
        rows = cur.rowcount
        conn.execute("DROP TABLE shots_floor")
    return floor, rows


def _steps(tmp: str, legacy: bool) -> list[tuple[str, list[str]]]:
    return [
        ("shotline --help", ["--help"]),
        ("status", ["status"]),
        ("lineage SKU (variant)", ["lineage", "prod-0000002-RED", "--json"]),
        ("lineage PRODUCT", ["lineage", "prod-0000002", "--json"]),
        (
            "review list --json --all",
            ["review", "list", "--json"] + ([] if legacy else ["--all"]),
        ),
        ("review list --json", ["review", "list", "--json", "--limit", "50"]),
        ("review sheet", ["review", "sheet", "--out", f"{tmp}/sheet"]),
        ("review export", ["review", "export", "--out", f"{tmp}/decisions.csv"]),
        ("lineage --import-run", ["lineage", "--import-run", "1", "--json"]),
        (
            "review approve --all-pending --template t1",
            ["review", "approve", "--all-pending", "--template", "t1"],
        ),
    ]


def _env(url: str, tmp: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
        SHOTLINE_DATABASE_URL=url,
        SHOTLINE_VAR_DIR=str(Path(tmp) / "var"),
        SHOTLINE_BLOB_ROOT=str(Path(tmp) / "blobs"),
        SHOTLINE_BRANDS_DIR=str(Path(tmp) / "brands"),  # none: the stored config
        SHOTLINE_BROKER_URL=redis_url,
        SHOTLINE_RESULT_BACKEND=redis_url,
        SHOTLINE_REVIEW_FREE_NAMES="true",
        SHOTLINE_REVIEWER="bench",
    )
    return env


def _plan_steps(url: str, env: dict[str, str], n: int, timeout: float) -> list[dict[str, Any]]:
    """``plan`` of ``n`` sample-brand products from nothing, with its own floor (after a
    warm-up plan of no products)."""
    plan_env = {**env, "SHOTLINE_BRANDS_DIR": str(ROOT / "samples" / "brands")}
    # A first plan of no products builds the tiny preset and checks the brand's LoRA against
    # it (torch; cached on disk by the adapter's sha256): once per model, not per plan.
    warm = run_cli(["plan", "--brand", "acme", "--show", "5"], plan_env, timeout)
    _psql(url, PLAN_SEED_SQL, {"n": n})
    warm["step"] = "plan, 0 products (model + LoRA checks)"
    row = run_cli(["plan", "--brand", "acme", "--show", "5"], plan_env, timeout)
    row["step"] = f"plan ({n} products)"
    acme = "brand_id = (SELECT id FROM brands WHERE name = 'acme')"
    row["floor_s"], row["rows"] = insert_select_floor(url, acme)
    return [warm, row]


def _table(args: argparse.Namespace, results: list[dict[str, Any]], floor: float) -> Any:
    from rich.table import Table

    table = Table(
        title=f"catalog scale: {args.shots} pending shots on Postgres {args.label}",
        caption=f"floor: INSERT ... SELECT of the {args.shots} shots, {floor:.2f} s",
    )
    for col in ("step", "exit", "wall s", "CPU s", "peak RSS MB", "wall / floor"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for r in results:
        exit_text = f"killed {r['killed_after_s']}s" if r["killed_after_s"] else str(r["exit"])
        own = r.get("floor_s", floor)  # plan: the floor of the rows it wrote
        table.add_row(
            r["step"],
            exit_text,
            f"{r['wall_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['peak_rss_mb']}",
            f"{r['wall_s'] / own:.1f}x" if own else "-",
        )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shots", type=int, default=10_000)
    ap.add_argument("--templates", type=int, default=3, help="shots per product")
    ap.add_argument("--plan-products", type=int, default=1000, help="0: no plan step")
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="scratch broker db")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per command")
    ap.add_argument("--label", default="", help="a note stored with the results")
    ap.add_argument(
        "--legacy", action="store_true", help="code before keyset paging: list has no --all"
    )
    ap.add_argument("--skip", action="append", default=[], help="a step name to leave out")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only this step (repeatable; 'plan' for the plan steps)",
    )
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "catalog_scale.json")
    args = ap.parse_args()

    import psycopg
    import redis
    from rich.console import Console

    from catalog import migrate

    admin = args.db
    name = f"shotline_bench_catalog_{uuid.uuid4().hex[:8]}"
    url = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    results: list[dict[str, Any]] = []
    try:
        migrate.upgrade(url)
        seeded = seed(url, args.shots, args.templates)
        floor, _ = insert_select_floor(url)
        with tempfile.TemporaryDirectory() as tmp:
            env = _env(url, tmp, args.redis)
            for label, cli_args in _steps(tmp, args.legacy):
                if label in args.skip or (args.only and label not in args.only):
                    continue
                row = run_cli(cli_args, env, args.timeout)
                row["step"] = label
                results.append(row)
            if args.plan_products and (not args.only or "plan" in args.only):
                results += _plan_steps(url, env, args.plan_products, args.timeout)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            approved = conn.execute(
                "SELECT count(*) FROM shots WHERE state = 'approved'"
            ).fetchone()
    finally:
        redis.Redis.from_url(args.redis).flushdb()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    console = Console()
    console.print(_table(args, results, floor))
    n_approved = approved[0] if approved else 0
    console.print(f"seeded in {seeded:.1f} s; approved after the run: {n_approved}")
    for r in results:
        if r["stderr_tail"]:
            console.print(f"{r['step']}: {r['stderr_tail']}", markup=False)
    out = {
        "label": args.label,
        "shots": args.shots,
        "templates": args.templates,
        "products": -(-args.shots // args.templates),
        "seed_s": round(seeded, 2),
        "floor_s": round(floor, 3),
        "approved": n_approved,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    console.print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
