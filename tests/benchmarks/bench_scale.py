"""Catalog-scale benchmark: review list / approve / export and lineage at N shots on Postgres.

    .venv/bin/python tests/benchmarks/bench_scale.py [--shots 10000] [--templates 3] \
        [--db postgresql://postgres@127.0.0.1:5432/test] [--timeout 300]

Seeds one brand, one import run, ``shots / templates`` products (one revision each) and
``shots`` gated shots waiting for review, directly with set-based SQL (generation is not
under test), in a fresh database that is dropped afterwards. Then runs each command as its own
``shotline`` process, the way a reviewer does, and records wall time, CPU time and the
process's peak RSS (``wait4``):

- ``review list --json --all`` (every pending shot, streamed) and ``review list --json``
  (the default page);
- ``review export --out FILE`` (every review state);
- ``lineage --import-run 1 --json``;
- ``lineage SKU`` (a variant sku);
- ``review approve --all-pending`` (the publish messages go to a scratch Redis database,
  which is emptied afterwards; nothing is published).

A command past ``--timeout`` is killed and recorded as such. Prints a table and writes JSON
(default ``var/bench/scale.json``). ``--legacy`` runs the list without ``--all`` (older code,
where every row was the default).
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


def run_cli(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """One ``shotline`` process: wall, CPU (user+sys) and peak RSS, or killed at ``timeout``."""
    cmd = [sys.executable, "-c", "from tasks.cli import main; main()", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT)
    )
    deadline = t0 + timeout
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.send_signal(signal.SIGKILL)
            killed = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    return {
        "command": "shotline " + " ".join(args),
        "exit": None if killed else proc.returncode,
        "killed_after_s": round(timeout, 1) if killed else None,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "stderr_tail": err[-300:] if (killed or proc.returncode) else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shots", type=int, default=10_000)
    ap.add_argument("--templates", type=int, default=3, help="shots per product")
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="scratch broker db")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per command")
    ap.add_argument("--label", default="", help="a note stored with the results")
    ap.add_argument(
        "--legacy", action="store_true", help="code before keyset paging: list has no --all"
    )
    ap.add_argument("--skip", action="append", default=[], help="a step name to leave out")
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "scale.json")
    args = ap.parse_args()

    import psycopg
    import redis
    from rich.console import Console
    from rich.table import Table

    from catalog import migrate

    admin = args.db
    name = f"shotline_bench_scale_{uuid.uuid4().hex[:8]}"
    url = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    results: list[dict[str, Any]] = []
    try:
        migrate.upgrade(url)
        seeded = seed(url, args.shots, args.templates)
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
            env.update(
                PYTHONPATH=str(ROOT),
                COLUMNS="200",
                SHOTLINE_DATABASE_URL=url,
                SHOTLINE_VAR_DIR=str(Path(tmp) / "var"),
                SHOTLINE_BLOB_ROOT=str(Path(tmp) / "blobs"),
                SHOTLINE_BRANDS_DIR=str(Path(tmp) / "brands"),  # none: the stored config
                SHOTLINE_BROKER_URL=args.redis,
                SHOTLINE_RESULT_BACKEND=args.redis,
                SHOTLINE_REVIEW_FREE_NAMES="true",
                SHOTLINE_REVIEWER="bench",
            )
            steps: list[tuple[str, list[str]]] = [
                (
                    "review list --json --all",
                    ["review", "list", "--json"] + ([] if args.legacy else ["--all"]),
                ),
                ("review list --json", ["review", "list", "--json", "--limit", "50"]),
                ("review export", ["review", "export", "--out", f"{tmp}/decisions.csv"]),
                ("lineage --import-run", ["lineage", "--import-run", "1", "--json"]),
                ("lineage SKU", ["lineage", "prod-0000002-RED", "--json"]),
                ("review approve --all-pending", ["review", "approve", "--all-pending"]),
            ]
            for label, cli_args in steps:
                if label in args.skip:
                    continue
                row = run_cli(cli_args, env, args.timeout)
                row["step"] = label
                results.append(row)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            approved = conn.execute(
                "SELECT count(*) FROM shots WHERE state = 'approved'"
            ).fetchone()
    finally:
        redis.Redis.from_url(args.redis).flushdb()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    table = Table(title=f"catalog scale: {args.shots} pending shots on Postgres {args.label}")
    for col in ("step", "exit", "wall s", "CPU s", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for r in results:
        exit_text = f"killed {r['killed_after_s']}s" if r["killed_after_s"] else str(r["exit"])
        table.add_row(
            r["step"], exit_text, f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", f"{r['peak_rss_mb']}"
        )
    console = Console()
    console.print(table)
    n_approved = approved[0] if approved else 0
    console.print(f"seeded in {seeded:.1f} s; approved after the run: {n_approved}")
    for r in results:
        if r["stderr_tail"]:
            console.print(f"{r['step']}: {r['stderr_tail']}", markup=False)
    out = {
        "label": args.label,
        "shots": args.shots,
        "templates": args.templates,
        "seed_s": round(seeded, 2),
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
