"""One table from the GPU run's JSON files: shakedown results and ours/peer per workload.

python tests/benchmarks/gpu/summarize.py DIR    # reads DIR/shakedown.json, DIR/bench_*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Issue 17's targets: shotline / plain diffusers (compiled, channels_last, LoRA fused).
TARGETS = {"sd15": 1.24, "sdxl": 1.22}
# Issue 14's: the gate on the GPU host / generation alone (bench_host_gate.py).
GATE_TARGET = 0.95


def bench_rows(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("bench_*.json")):
        data = json.loads(path.read_text())
        variant = "no prompt cache" if data["args"].get("no_prompt_cache") else ""
        for r in data["rows"]:
            peak = data.get("matmul_peak_tflops")
            rows.append({**r, "machine": data["machine"], "peak": peak, "variant": variant})
    return rows


def summary(folder: Path) -> dict[str, Any]:
    shake = folder / "shakedown.json"
    checks = json.loads(shake.read_text())["rows"] if shake.exists() else []
    workloads = []
    for r in bench_rows(folder):
        if r["path"] != "shotline":
            continue
        target = TARGETS.get(r["arch"])
        workloads.append(
            {
                "arch": r["arch"],
                "variant": r["variant"],
                "size": r["size"],
                "batch": r["batch"],
                "images_per_hour": round(r["images_per_hour"]),
                "tflops": round(r["tflops"], 1),
                "pct_of_peak": r.get("pct_of_peak"),
                "peak_mem_gib": r.get("peak_mem_gib"),
                "compile_s": r.get("compile_s"),
                "ratio": r["ratio"],
                "target": target,
                "met": None if target is None or r["ratio"] is None else r["ratio"] >= target,
                "machine": r["machine"],
            }
        )
    gate_file = folder / "host_gate.json"
    gate = json.loads(gate_file.read_text()) if gate_file.exists() else None
    if gate is not None:
        gate["target"] = GATE_TARGET
        gate["met"] = gate["ratio_gate_on_host_vs_alone"] >= GATE_TARGET
    return {"checks": checks, "workloads": workloads, "gate": gate}


def print_summary(s: dict[str, Any], console: Console) -> None:
    t = Table(title="shakedown")
    for c in ("check", "result"):
        t.add_column(c)
    for r in s["checks"]:
        res = "skipped" if r.get("skipped") else ("ok" if r["ok"] else "FAIL")
        t.add_row(Text(r["check"]), Text(res))
    console.print(t)
    t = Table(title="throughput: shotline vs plain diffusers (same process)")
    for c in ("model", "batch", "img/h", "TFLOP/s", "% peak", "VRAM GiB", "ratio", "target"):
        t.add_column(c)
    for w in s["workloads"]:
        met = "" if w["met"] is None else (" met" if w["met"] else " MISSED")
        t.add_row(
            Text(f"{w['arch']} {w['size']}² {w['variant']}".strip()),
            Text(str(w["batch"])),
            Text(f"{w['images_per_hour']:,}"),
            Text(str(w["tflops"])),
            Text(f"{w['pct_of_peak']:.1f}" if w["pct_of_peak"] is not None else ""),
            Text(f"{w['peak_mem_gib']:.1f}" if w["peak_mem_gib"] is not None else ""),
            Text(f"{w['ratio']:.2f}x" if w["ratio"] is not None else ""),
            Text(f"{w['target']}x{met}" if w["target"] else ""),
        )
    console.print(t)
    g = s.get("gate")
    if g is not None:
        t = Table(title="gate on the GPU host vs generation alone (bench_host_gate.py)")
        cols = ("model", "CLIP", "batch", "img/h alone", "img/h gated", "ratio", "target", "Δscore")
        for c in cols:
            t.add_column(c)
        iph = g["images_per_hour"]
        t.add_row(
            Text(f"{g['arch']} {g['size']}² on {g['device']}"),
            Text(str(g["clip"])),
            Text(f"{g['batch']} x {g['gpu_batches_per_task']}"),
            Text(f"{iph['generation alone']:,}"),
            Text(f"{iph['gate on host']:,}"),
            Text(f"{g['ratio_gate_on_host_vs_alone']:.3f}x"),
            Text(f"{g['target']}x {'met' if g['met'] else 'MISSED'}"),
            Text(f"{(g.get('score_agreement') or {}).get('max_abs_score_diff', float('nan')):.1e}"),
        )
        console.print(t)


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("var/bench/gpu")
    s = summary(folder)
    print_summary(s, Console(width=160))
    (folder / "summary.json").write_text(json.dumps(s, indent=2))
    failed = [c for c in s["checks"] if c.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
