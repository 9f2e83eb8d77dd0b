"""The control plane alone: N shots through generate -> gate -> approve -> publish.

The generator is the fixed-image stand-in (``tasks.fakes``): it returns at once. Everything
else is real: Redis, Postgres, `celery worker` processes, the real gate (CLIP + the
watermark + provenance metadata) and publishing to moto's S3 server over HTTP. Approval is
an instant scripted reviewer ("bench"), so the line runs end to end.

    .venv/bin/python tests/benchmarks/bench_orchestration.py [--shots 2000] [--image-size 64]
    .venv/bin/python tests/benchmarks/bench_orchestration.py --shots 48 --image-size 512 \
        --clip ViT-B-32            # a real-size CLIP architecture (random weights)

``--gate-on gpu`` (the default, as in production) gates on the generating worker: CLIP and
finalizing run in the "gpu" worker process (on this machine's CPU), and the cpu workers only
publish. ``--gate-on cpu`` is the old line: the gate on the cpu queue.

Reports machine CPU-seconds per shot by role (the control plane: cpu workers, the driver,
Postgres and Redis; the GPU host; the S3 stand-in on its own) and blob-store requests per
shot, counted by the S3 server. Prints a table and writes JSON (default
var/bench/orchestration.json). The watermark needs >= 256x256 pixels; at the tiny preset's
64x64 it is skipped (method "none").
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from catalog.db import make_engine, make_sessionmaker  # noqa: E402
from catalog.models import (  # noqa: E402
    Asset,
    Brand,
    FilterResult,
    Generation,
    Product,
    ProductRevision,
    ReviewEvent,
    Shot,
)
from pipeline.settings import Settings  # noqa: E402
from tests.benchmarks.permissive_brand import write_permissive_brand  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database, free_port  # noqa: E402

REDIS_DB = 12


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def p(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))] * 1000, 1)

    return {"p50_ms": p(0.5), "p90_ms": p(0.9), "p99_ms": p(0.99), "max_ms": p(1.0)}


def seed(engine: Any, brand_cfg: dict[str, Any], n: int, size: int) -> list[int]:
    """Bulk-insert n products + revisions + planned shots (Core inserts: seconds, not minutes)."""
    import hashlib

    with make_sessionmaker(engine).begin() as s:
        brand = Brand(name="bench", config_digest="0" * 64, version=1, config=brand_cfg)
        s.add(brand)
        s.flush()
        products = [{"brand_id": brand.id, "sku": f"SKU-{i:06d}"} for i in range(n)]
        pids = list(s.scalars(insert(Product).returning(Product.id), products))
        revs = [
            {
                "product_id": pid,
                "revision": 1,
                "content_hash": hashlib.sha256(str(pid).encode()).hexdigest(),
                "data": {"key": f"SKU-{i:06d}", "title": f"Linen Pillow {i}", "variants": []},
                "source_line": i + 2,
            }
            for i, pid in enumerate(pids)
        ]
        rids = list(s.scalars(insert(ProductRevision).returning(ProductRevision.id), revs))
        shots = [
            {
                "brand_id": brand.id,
                "product_revision_id": rid,
                "variant_key": "",
                "variant": {},
                "brand_config_digest": "0" * 64,
                "template_name": "hero_white",
                "template_digest": "0" * 64,
                "prompt": f"studio product photo of Linen Pillow {i}",
                "negative_prompt": "",
                "seed": i,
                "model_id": "tiny",
                "adapters": [],
                "width": size,
                "height": size,
                "steps": 4,
                "guidance": 5.0,
                "scheduler": "euler",
                "state": "planned",
            }
            for i, rid in enumerate(rids)
        ]
        return list(s.scalars(insert(Shot).returning(Shot.id), shots))


def calibration_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop (median of 5). This box is a shared VM
    whose speed drifts by up to 2x within an hour, invisibly (no steal time is reported);
    shots/s only compare between runs with similar calibration figures."""
    runs = []
    for _ in range(5):
        t0, x = time.process_time(), 0
        for i in range(1_000_000):
            x += i
        runs.append((time.process_time() - t0) * 1000)
    return round(sorted(runs)[2], 1)


def own_cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds of these processes alone, without their children."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree_cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds of these processes and all their descendants."""
    tree: list[psutil.Process] = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree += [p, *p.children(recursive=True)]
    return own_cpu(tree)


def named_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds of every process with one of these names (Postgres and Redis backends;
    on a shared machine this includes other clients' work)."""
    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        if p.info["name"] and p.info["name"].startswith(names) and p.info["cpu_times"]:
            total += p.info["cpu_times"].user + p.info["cpu_times"].system
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32, help="shots per GPU batch")
    ap.add_argument("--cpu-batch-size", type=int, default=32, help="shots per gate/publish task")
    ap.add_argument("--cpu-workers", type=int, default=2, help="prefork children on cpu queue")
    ap.add_argument("--gate", choices=["real", "fake"], default="real")
    ap.add_argument(
        "--gate-on", choices=["gpu", "cpu"], default="gpu", help="where the gate runs (setting)"
    )
    ap.add_argument(
        "--clip", default="tiny", help="open_clip architecture for the gate (random weights)"
    )
    ap.add_argument("--gpu-batches-per-task", type=int, default=4)
    ap.add_argument("--store-raw", action="store_true", help="keep raw PNGs in the store too")
    ap.add_argument(
        "--blob",
        choices=["s3", "local"],
        default="s3",
        help="s3: moto's server on this machine (default); local: a folder, to see the control "
        "plane without an S3 server competing for the same 2 cores",
    )
    ap.add_argument(
        "--s3-server",
        choices=["keepalive", "moto_server"],
        default="keepalive",
        help="keepalive: moto's S3 app under granian with HTTP/1.1 keep-alive, as S3 and MinIO "
        "serve (tests/moto_s3.py); moto_server: moto's own launcher (werkzeug dev server, one "
        "TCP connection per request)",
    )
    ap.add_argument("--json-out", type=Path, default=ROOT / "var" / "bench" / "orchestration.json")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)

    tmp = Path(tempfile.mkdtemp(prefix="shotline-bench-"))
    # Every image should go all the way to S3: the sample brand with its gate opened up.
    brands = tmp / "brands"
    acme = write_permissive_brand(brands, keep_concepts=False)

    pg_url = create_pg_database("shotline_bench")
    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOTLINE_")}
    values = {
        "database_url": pg_url,
        "broker_url": broker,
        "brands_dir": str(brands),
        "var_dir": str(tmp / "var"),
        "model_cache_dir": str(ROOT / "var" / "models"),
        "blob_backend": args.blob,
        "blob_root": str(tmp / "blobs"),
        "s3_endpoint_url": endpoint,
        "s3_bucket": "bench",
        "generator_factory": "tasks.fakes:fixed_image_generator",
        "batch_size": args.batch_size,
        "cpu_batch_size": args.cpu_batch_size,
        "stall_timeout_s": 60,
        "gate_on": args.gate_on,
        "clip_model": args.clip,
        "gpu_batches_per_task": args.gpu_batches_per_task,
        "store_raw": args.store_raw,
    }
    if args.gate == "fake":
        values["gate_factory"] = "tasks.fakes:pass_through_gate"
    env.update({f"SHOTLINE_{k.upper()}": str(v) for k, v in values.items()})
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        OMP_NUM_THREADS="1",  # 2 cores: torch must not oversubscribe in each worker
        MKL_NUM_THREADS="1",
        SHOTLINE_FAKE_IMAGE_SIZE=str(args.image_size),
        PYTHONPATH=str(ROOT),
    )
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    logs = tmp / "logs"
    logs.mkdir()
    try:
        s3_cmd = (
            [str(ROOT / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)]
            if args.s3_server == "moto_server"
            else [sys.executable, "-m", "tests.moto_s3", "--port", str(port)]
        )
        s3_log = logs / "s3.log"  # moto_server logs each request here (werkzeug)
        procs.append(
            subprocess.Popen(
                s3_cmd,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=s3_log.open("wb"),
                env=env,
            )
        )
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for attempt in range(300):
            try:
                s3.create_bucket(Bucket="bench")
                break
            except Exception:
                if attempt == 299:
                    raise
                time.sleep(0.1)
        celery = str(ROOT / ".venv/bin/celery")
        common = [
            "-A",
            "tasks.celery_app",
            "worker",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        workers = {
            "gpu": [*common, "-Q", "gpu.tiny", "--pool", "solo", "-n", "gpu@%h"],
            "cpu": [
                *common,
                "-Q",
                "cpu",
                "--pool",
                "prefork",
                "-c",
                str(args.cpu_workers),
                "-n",
                "cpu@%h",
            ],
        }
        for name, wargs in workers.items():
            procs.append(
                subprocess.Popen(
                    [celery, *wargs],
                    cwd=ROOT,
                    env=env,
                    stdout=(logs / f"{name}-worker.log").open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        engine = make_engine(pg_url)
        ids = seed(engine, acme, args.shots, args.image_size)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = "".join(p.read_text(errors="replace") for p in logs.glob("*worker.log"))
            # Every process (the solo GPU worker, each prefork child) logs when it is warm.
            if text.count("shotline worker warm") >= 1 + args.cpu_workers:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("workers did not start:\n" + text[-3000:])

        from catalog.review import Reviewer, approve
        from tasks.dispatch import enqueue_generate, enqueue_publish

        requests_before = s3_requests(args, endpoint, s3_log)
        calibration_before = calibration_ms()
        worker_ps = [psutil.Process(p.pid) for p in procs[1:]]
        all_ps = [psutil.Process(p.pid) for p in procs]
        cpu0_workers, cpu0_all = tree_cpu(worker_ps), tree_cpu(all_ps)
        # Per role: the GPU worker (solo pool), the cpu worker's main process (consumer,
        # acks) and its prefork children (gate and publish).
        roles = {"gpu": worker_ps[0:1], "cpu_main": worker_ps[1:2]}
        role0 = {k: own_cpu(v) for k, v in roles.items()}
        sys0 = psutil.cpu_times()
        pg0, redis0, me0 = named_cpu(("postgres",)), named_cpu(("redis",)), time.process_time()
        t0 = time.time()
        enqueue_generate(ids, settings)
        enqueued_s = time.time() - t0

        # The scripted reviewer: approve whatever is pending, publish it, until all are out.
        sessions = make_sessionmaker(engine)
        done_states = ("published", "rejected", "failed")
        stop = threading.Event()
        approved_at: dict[int, float] = {}
        last = -1
        while time.time() - t0 < args.timeout:
            with sessions.begin() as s:
                pending = list(s.scalars(select(Shot.id).where(Shot.state == "pending_review")))
                if pending:
                    approve(s, pending, Reviewer("demo", "bench"))
            now = time.time()
            approved_at.update({i: now for i in pending})
            enqueue_publish(pending, settings)
            with sessions.begin() as s:
                done = s.scalar(
                    select(__import__("sqlalchemy").func.count()).where(Shot.state.in_(done_states))
                )
            if done != last:
                print(f"  {time.time() - t0:6.1f}s  {done}/{len(ids)} out", flush=True)
                last = done
            if done >= len(ids):
                break
            time.sleep(0.25)
        elapsed = time.time() - t0
        stop.set()
        cpu_workers = tree_cpu(worker_ps) - cpu0_workers
        by_role = {k: own_cpu(v) - role0[k] for k, v in roles.items()}
        by_role["cpu_children"] = cpu_workers - sum(by_role.values())
        cpu_services = tree_cpu(all_ps) - cpu0_all - cpu_workers
        sys1 = psutil.cpu_times()
        pg_cpu, redis_cpu = named_cpu(("postgres",)) - pg0, named_cpu(("redis",)) - redis0
        driver_cpu = time.process_time() - me0
        sys_busy = (sys1.user + sys1.system) - (sys0.user + sys0.system)

        requests = s3_requests(args, endpoint, s3_log) - requests_before
        calibration_after = calibration_ms()
        with sessions.begin() as s:
            states = dict(
                s.execute(
                    select(Shot.state, __import__("sqlalchemy").func.count()).group_by(Shot.state)
                ).all()
            )
            gen_at = dict(s.execute(select(Generation.shot_id, Generation.created_at)).all())
            gen_timings = [
                (b, t) for b, t in s.execute(select(Generation.batch_id, Generation.timings))
            ]
            gate_at = dict(s.execute(select(FilterResult.shot_id, FilterResult.created_at)).all())
            pub_at = dict(s.execute(select(Asset.shot_id, Asset.published_at)).all())
            rev_at = dict(s.execute(select(ReviewEvent.shot_id, ReviewEvent.created_at)).all())
        # Per-stage latency: from the previous stage's commit to this stage's commit
        # (queue wait + task time), from the rows' own timestamps.
        lat = {
            "enqueue->generated": [g.timestamp() - t0 for g in gen_at.values()],
            "generated->gated": [
                gate_at[i].timestamp() - gen_at[i].timestamp() for i in gate_at if i in gen_at
            ],
            "approved->published": [
                pub_at[i].timestamp() - rev_at[i].timestamp() for i in pub_at if i in rev_at
            ],
            "enqueue->published": [p.timestamp() - t0 for p in pub_at.values()],
        }
        # Task run times, from the workers' own "succeeded in" lines.
        task_times: dict[str, list[float]] = {}
        for log in logs.glob("*worker.log"):
            for name, secs in re.findall(
                r"Task (shotline\.\w+)\[[^\]]+\] succeeded in ([0-9.]+)s", log.read_text()
            ):
                task_times.setdefault(name, []).append(float(secs))

        n = len(ids)
        control = by_role["cpu_main"] + by_role["cpu_children"] + pg_cpu + redis_cpu + driver_cpu
        result = {
            "machine": f"{psutil.cpu_count()} CPU cores, {platform_name()}",
            "shots": n,
            "image_size": args.image_size,
            "gate": args.gate,
            "gate_on": args.gate_on,
            "clip": args.clip,
            "store_raw": args.store_raw,
            "gpu_batches_per_task": args.gpu_batches_per_task,
            "blob_requests_per_shot": round(requests.total() / n, 3),
            "blob_requests": dict(requests),
            "control_plane_ms_per_shot": round(control / n * 1000, 2),
            "gpu_host_ms_per_shot": round(by_role["gpu"] / n * 1000, 2),
            "s3_standin_ms_per_shot": round(cpu_services / n * 1000, 2),
            **host_stage_figures(gen_timings),
            "blob": args.blob,
            "s3_server": args.s3_server if args.blob == "s3" else None,
            "batch_size": args.batch_size,
            "cpu_batch_size": args.cpu_batch_size,
            "cpu_workers": args.cpu_workers,
            "elapsed_s": round(elapsed, 2),
            "enqueue_s": round(enqueued_s, 3),
            "shots_per_s": round(n / elapsed, 1),
            "states": states,
            "calibration_ms_before": calibration_before,
            "calibration_ms_after": calibration_after,
            "cpu_s_per_shot_workers": round(cpu_workers / n, 4),
            "cpu_s_per_shot_worker_roles": {k: round(v / n, 4) for k, v in by_role.items()},
            "cpu_s_per_shot_moto": round(cpu_services / n, 4),
            "cpu_s_per_shot_postgres": round(pg_cpu / n, 4),
            "cpu_s_per_shot_redis": round(redis_cpu / n, 4),
            "cpu_s_per_shot_driver_and_reviewer": round(driver_cpu / n, 4),
            "cpu_s_per_shot_machine": round(sys_busy / n, 4),
            "machine_load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "stage_latency": {k: percentiles(v) for k, v in lat.items()},
            "task_runtime": {
                k: {"tasks": len(v), **percentiles(v)} for k, v in sorted(task_times.items())
            },
        }
        print_table(result)
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2))
        print(f"\nJSON: {args.json_out}")
        engine.dispose()
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM) if p is not procs[0] else p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        drop_pg_database(pg_url)
        redis.Redis.from_url(broker).flushdb()
        _ = uuid  # keep the import for ad-hoc debugging runs


def s3_requests(args: argparse.Namespace, endpoint: str, log: Path) -> Counter[str]:
    """Requests the S3 server has answered so far, by method and key prefix: the stand-in
    counts them itself (``GET /_requests``); moto_server logs one line per request."""
    if args.blob != "s3":
        return Counter()
    if args.s3_server == "keepalive":
        import urllib.request

        with urllib.request.urlopen(f"{endpoint}/_requests", timeout=10) as resp:
            return Counter(json.loads(resp.read()))
    counts: Counter[str] = Counter()
    for method, path in re.findall(r'"([A-Z]+) (/[^ ?"]*)[^"]* HTTP/1\.1"', log.read_text()):
        parts = path.lstrip("/").split("/")
        counts[f"{method} {parts[1] if len(parts) > 2 else ''}"] += 1
    return counts


HOST_FIGURES = (
    "host_finalize_cpu_ms_per_shot",
    "host_score_ms_per_shot",
    "host_batches_overlapping_next",
)


def host_stage_figures(gens: list[tuple[str | None, dict[str, Any]]]) -> dict[str, Any]:
    """The GPU host's stages from the shots' own timings (gate on the GPU host): finalize
    CPU (thread time) and scoring per shot, and how many GPU batches were still finalizing
    when the next GPU batch of their message began generating."""
    rows = [(bid, t) for bid, t in gens if t and "finalize_start" in t]
    if not rows:
        return dict.fromkeys(
            (
                "host_finalize_cpu_ms_per_shot",
                "host_score_ms_per_shot",
                "host_batches_overlapping_next",
            )
        )
    batches: dict[tuple[str | None, float], list[dict[str, Any]]] = {}
    for bid, t in rows:
        batches.setdefault((bid, t["generate_start"]), []).append(t)
    messages: dict[str | None, list[dict[str, Any]]] = {}
    for (bid, _), shots in sorted(batches.items(), key=lambda kv: kv[0][1]):
        messages.setdefault(bid, []).append(shots[0])
    pairs = [pair for order in messages.values() for pair in itertools.pairwise(order)]
    overlapped = sum(1 for a, b in pairs if a["finalize_end"] > b["generate_start"])
    score = sum(shots[0]["score_s"] for shots in batches.values()) / len(rows)
    return {
        "host_finalize_cpu_ms_per_shot": round(
            sum(t["finalize_cpu_s"] for _, t in rows) / len(rows) * 1000, 2
        ),
        "host_score_ms_per_shot": round(score * 1000, 2),
        "host_batches_overlapping_next": f"{overlapped}/{len(pairs)}",
    }


def platform_name() -> str:
    import platform

    return f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(
        title=f"orchestration: {r['shots']} shots, {r['image_size']}px, "
        f"gate={r['gate']} on {r['gate_on']} (clip {r['clip']}), blob={r['blob']}"
        + (f" ({r['s3_server']})" if r.get("s3_server") else "")
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key in (
        "shots_per_s",
        "blob_requests_per_shot",
        "control_plane_ms_per_shot",
        "gpu_host_ms_per_shot",
        "s3_standin_ms_per_shot",
        "host_finalize_cpu_ms_per_shot",
        "host_score_ms_per_shot",
        "host_batches_overlapping_next",
        "elapsed_s",
        "enqueue_s",
        "cpu_s_per_shot_workers",
        "cpu_s_per_shot_moto",
        "cpu_s_per_shot_postgres",
        "cpu_s_per_shot_redis",
        "cpu_s_per_shot_driver_and_reviewer",
        "cpu_s_per_shot_machine",
        "machine_load_avg_1m_at_end",
        "calibration_ms_before",
        "calibration_ms_after",
    ):
        t.add_row(key, str(r[key]))
    t.add_row("cpu_s_per_shot_worker_roles", json.dumps(r["cpu_s_per_shot_worker_roles"]))
    t.add_row("states", json.dumps(r["states"]))
    console.print(t)
    lt = Table(title="latency (ms)")
    for col in ("stage", "p50", "p90", "p99", "max"):
        lt.add_column(col, justify="right" if col != "stage" else "left")
    for stage, p in {**r["stage_latency"], **r["task_runtime"]}.items():
        lt.add_row(stage, *(str(p.get(k, "")) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")))
    console.print(lt)


if __name__ == "__main__":
    main()
