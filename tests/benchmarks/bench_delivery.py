"""Delivery benchmark: renditions per master, and both exports at catalog scale.

    .venv/bin/python tests/benchmarks/bench_delivery.py [--masters 40] [--products 10000] \
        [--db postgresql://postgres@127.0.0.1:5432/test] [--timeout 300]

1. **Renditions.** ``--masters`` synthetic 1024x1024 masters (a product shape on white with
   texture, watermarked and encoded as PNG with the XMP packet, as the gate writes them) go
   through ``make_renditions`` with the sample brand's three channels: JPEG 2048 1:1 pad
   (shopify), WebP 1600 (gmc), PNG 1080 4:5 crop (social; the only one whose pixels change,
   so its watermark is embedded again). Every rendition's watermark is decoded and checked.
   Reports CPU seconds per master (``time.process_time``, this process) in total and per
   step.
2. **Exports.** A fresh Postgres database seeded with set-based SQL: ``--products``
   products, three published current assets each (``--per-product``), each asset with a
   shopify and a gmc rendition row. Then ``shotline export shopify`` and ``shotline export
   gmc`` (TSV and XML) each run as their own process: wall time, CPU time and peak RSS
   (``wait4``). The database is dropped afterwards.

Prints a table and writes JSON (default ``var/bench/delivery.json``).
"""

from __future__ import annotations

import argparse
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

from tests.benchmarks.bench_catalog_scale import run_cli  # noqa: E402

BRAND_YAML = """
name: bench
templates:
  t1: {prompt: "studio photo of {{ product.title }}"}
  t2: {prompt: "flat lay of {{ product.title }}"}
  t3: {prompt: "{{ product.title }} in a kitchen"}
channels:
  shopify:
    renditions: [{name: main, format: jpeg, quality: 90, longest_side: 2048}]
    slots: {additional: [t1, t2], lifestyle: [t3]}
    alt_text: "{{ product.title }}{% if variant %} ({{ variant.values() | join(', ') }}){% endif %}"
  gmc:
    renditions: [{name: feed, format: webp, quality: 90, longest_side: 1600}]
    slots: {additional: [t1, t2], lifestyle: [t3]}
"""

SEED_SQL = """
INSERT INTO brands (name, config_digest, version, config, created_at, updated_at)
VALUES ('bench', repeat('0', 64), 1, '{"name": "bench"}', now(), now());
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
        'body_html', '<p>Soft organic cotton tee, relaxed fit.</p>', 'vendor', 'Bench',
        'product_type', 'Tees', 'tags', '["cotton", "organic"]', 'images', '["a.jpg"]',
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
    repeat('0', 64), 't' || t, repeat('1', 64), 'studio photo', '', '[]', '[]',
    (r.id * 7 + t)::bigint, 'tiny', '[]', 1024, 1024, 2, 1.0, 'euler', 'published', 1, '{}',
    now(), now()
FROM product_revisions r JOIN products p ON p.id = r.product_id,
    generate_series(1, %(per_product)s) t
ORDER BY r.id, t;
INSERT INTO assets (shot_id, backend, bucket, key, sha256, size_bytes, etag, content_type,
    published_at)
SELECT s.id, 'local', NULL, 'bench/' || s.id || '/' || md5(s.id::text) || '.png',
    md5(s.id::text) || md5(s.id::text), 1000000, NULL, 'image/png', now()
FROM shots s;
INSERT INTO asset_renditions (asset_id, shot_id, channel, name, backend, bucket, key, sha256,
    size_bytes, content_type, width, height, quality, watermark_verified, bit_accuracy,
    xmp_ai_tag, icc_srgb, created_at)
SELECT a.id, a.shot_id, c.channel, c.name, 'local', NULL,
    'bench/' || a.shot_id || '/' || md5(a.id::text || c.channel) || c.ext,
    md5(a.id::text || c.channel) || md5(c.channel), 300000, c.ctype, 1024, 1024, 90, true,
    1.0, true, true, now()
FROM assets a, (VALUES ('shopify', 'main', '.jpg', 'image/jpeg'),
    ('gmc', 'feed', '.webp', 'image/webp')) AS c(channel, name, ext, ctype);
ANALYZE;
"""


def synthetic_master(shot_id: int, seed: int) -> bytes:
    """A 1024^2 product-like image (a textured shape on white), watermarked, with XMP."""
    import numpy as np
    from PIL import Image, ImageDraw

    from pipeline.gate import watermark as wm
    from pipeline.gate.provenance import build_xmp, encode_image
    from pipeline.types import ProvenanceInfo

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (1024, 1024), "white")
    draw = ImageDraw.Draw(img)
    color = tuple(int(c) for c in rng.integers(40, 200, 3))
    draw.ellipse((250, 200, 780, 860), fill=color)
    arr = np.asarray(img).astype(np.int16)
    arr[200:860, 250:780] += rng.integers(-12, 12, (660, 530, 3), dtype=np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    marked = wm.embed(img, shot_id, wm.WatermarkConfig())
    info = ProvenanceInfo(shot_id, "bench", None, brand="acme", sku="x", template="t")
    return encode_image(marked.image, "png", build_xmp(info, {"Watermark": marked.method}))


def bench_renditions(n: int) -> dict[str, Any]:
    from pipeline.brand.loader import find_brand
    from pipeline.delivery.renditions import Master, channel_renditions, make_rendition

    cfg = find_brand(ROOT / "samples" / "brands", "acme")
    wanted = channel_renditions(cfg.to_json()["channels"])
    masters = [(1000 + i, synthetic_master(1000 + i, i)) for i in range(n)]
    steps: dict[str, float] = {"decode master": 0.0}
    t_all = time.process_time()
    verified = 0
    for shot_id, data in masters:
        t = time.process_time()
        master = Master.from_bytes(data)
        steps["decode master"] += time.process_time() - t
        for channel, spec in wanted:
            t = time.process_time()
            r = make_rendition(master, channel, spec, shot_id)
            label = f"{channel} {spec.format}"
            steps[label] = steps.get(label, 0.0) + time.process_time() - t
            verified += r.watermark_verified
    total = time.process_time() - t_all
    return {
        "masters": n,
        "renditions_per_master": len(wanted),
        "watermarks_verified": verified,
        "cpu_s_per_master": round(total / n, 4),
        "cpu_s_per_master_by_step": {k: round(v / n, 4) for k, v in steps.items()},
    }


def seed(url: str, products: int, per_product: int) -> float:
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in SEED_SQL.split(";\n"):
            if stmt.strip():
                conn.execute(stmt, {"products": products, "per_product": per_product})  # type: ignore[arg-type]
    return time.perf_counter() - t0


def bench_exports(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from catalog import migrate

    name = f"shotline_bench_delivery_{uuid.uuid4().hex[:8]}"
    url = args.db.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(args.db, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(url)
        seeded = seed(url, args.products, args.per_product)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "brands").mkdir()
            (Path(tmp) / "brands" / "bench.yaml").write_text(BRAND_YAML)
            env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
            env.update(
                PYTHONPATH=str(ROOT),
                SHOTLINE_DATABASE_URL=url,
                SHOTLINE_VAR_DIR=str(Path(tmp) / "var"),
                SHOTLINE_BLOB_ROOT=str(Path(tmp) / "blobs"),
                SHOTLINE_BRANDS_DIR=str(Path(tmp) / "brands"),
                SHOTLINE_PUBLIC_BASE_URL="https://cdn.example.com/bench/",
            )
            runs = []
            for label, out in (("shopify", "shop.csv"), ("gmc", "gmc.tsv"), ("gmc", "gmc.xml")):
                path = Path(tmp) / out
                cmd = ["export", label, "--brand", "bench", "--out", str(path)]
                res = run_cli(cmd, env, args.timeout)
                res["bytes"] = path.stat().st_size if path.exists() else 0
                res["lines"] = sum(1 for _ in path.open()) if path.exists() else 0
                runs.append(res)
    finally:
        from tests.conftest import drop_pg_database

        drop_pg_database(url)
    return {
        "products": args.products,
        "current_assets": args.products * args.per_product,
        "seed_s": round(seeded, 1),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--masters", type=int, default=40)
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--per-product", type=int, default=3)
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--skip", action="append", default=[], help="renditions or exports")
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "delivery.json")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    result: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count()}
    if "renditions" not in args.skip:
        result["renditions"] = bench_renditions(args.masters)
    if "exports" not in args.skip:
        result["exports"] = bench_exports(args)
    console = Console()
    if "renditions" in result:
        r = result["renditions"]
        t = Table(title=f"renditions: {r['masters']} masters 1024^2, 3 renditions each")
        t.add_column("step")
        t.add_column("CPU s / master", justify="right")
        for k, v in r["cpu_s_per_master_by_step"].items():
            t.add_row(k, f"{v:.4f}")
        t.add_row("total", f"{r['cpu_s_per_master']:.4f}")
        console.print(t)
        console.print(f"watermarks verified: {r['watermarks_verified']}")
    if "exports" in result:
        e = result["exports"]
        t = Table(title=f"exports: {e['products']} products, {e['current_assets']} assets")
        for col in ("command", "exit", "wall s", "CPU s", "peak RSS MB", "lines"):
            t.add_column(col)
        for run in e["runs"]:
            t.add_row(
                run["command"].split(" --out")[0],
                str(run["exit"]),
                str(run["wall_s"]),
                str(run["cpu_s"]),
                str(run["peak_rss_mb"]),
                str(run["lines"]),
            )
        console.print(t)
        console.print(f"seeded in {e['seed_s']} s")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
