"""``shotline gate rescore --brand B [--dry-run] [--json]``: the brand's current gate policy
applied to its gated shots.

Shots whose stored scores came from the same concepts and CLIP model are re-decided from the
stored numbers (no encoder); the others are encoded again from their stored final image, in
this process (``pipeline.gate.rescore`` for the rules, ``catalog.regate`` for the rows).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from catalog.embeddings import replace_embedding
from catalog.models import Shot
from catalog.regate import record_pass, rescore_candidates
from catalog.shots import shot_info, stored_brand_configs
from pipeline.brand.config import BrandConfigError
from pipeline.gate.policy import GateError, GatePolicy
from pipeline.gate.rescore import can_redecide, outcome, redecide, with_carried_checks
from pipeline.images import decode_image
from pipeline.types import FilterDecision, GateItem
from tasks.cli.common import clean, cli_state, console, fail, print_json
from tasks.context import WorkerContext

gate_app = typer.Typer(help="Re-run gate decisions.", no_args_is_help=True)

ENCODE_BATCH = 16  # final images decoded and encoded at a time: bounded memory


@dataclass
class _Pass:
    decisions: dict[int, tuple[FilterDecision, str]] = field(default_factory=dict)
    modes: Counter[str] = field(default_factory=Counter)


def _redecide_or_queue(
    shots: list[Shot], policy: Any, clip_model: str, run: _Pass, progress: Progress, task: Any
) -> list[Shot]:
    """Re-decide what the stored scores allow; return the shots that need encoding."""
    to_encode: list[Shot] = []
    for shot in shots:
        fr = shot.filter_result
        assert fr is not None
        if fr.policy_version == getattr(policy, "version", None) and fr.clip_model == clip_model:
            run.modes["already current"] += 1
            progress.advance(task)
            continue
        dec = None
        if isinstance(policy, GatePolicy) and can_redecide(
            fr.policy_version, fr.clip_model, policy, clip_model
        ):
            dec = redecide(list(fr.scores), policy, clip_model)
        if dec is None:
            to_encode.append(shot)
            continue
        run.modes["re-decided"] += 1
        dec = with_carried_checks(dec, list(fr.scores or []), list(fr.reasons or []))
        run.decisions[shot.id] = (dec, outcome(shot.state, dec.decision))
        progress.advance(task)
    return to_encode


def _encode(
    wctx: WorkerContext,
    s: Any,
    shots: list[Shot],
    policy: Any,
    run: _Pass,
    progress: Progress,
    task: Any,
) -> None:
    """Score the stored final images again, a batch at a time."""
    the_gate = wctx.gate()
    infos = shot_info(s, shots)
    for i in range(0, len(shots), ENCODE_BATCH):
        part = [sh for sh in shots[i : i + ENCODE_BATCH] if sh.watermark is not None]
        for sh in shots[i : i + ENCODE_BATCH]:
            if sh.watermark is None:
                run.modes["no final image"] += 1
                progress.advance(task)
        keys = [sh.watermark.image_key for sh in part if sh.watermark is not None]
        raws = wctx.io_map(wctx.store.get, keys)
        items = [  # the bounded decoder: a stored blob is still bytes from a store
            GateItem(
                sh.id, decode_image(raw, f"shot {sh.id} final image"), infos[sh.id].product_text
            )
            for sh, raw in zip(part, raws, strict=True)
        ]
        for sh, dec in zip(part, the_gate.check(items, policy), strict=True):
            run.modes["re-encoded"] += 1
            if sh.filter_result is not None:
                prev = sh.filter_result
                dec = with_carried_checks(dec, list(prev.scores or []), list(prev.reasons or []))
            run.decisions[sh.id] = (dec, outcome(sh.state, dec.decision))
            progress.advance(task)


def _record(wctx: WorkerContext, run: _Pass) -> int:
    recorded = 0
    with wctx.sessions.begin() as s:
        for sid, (dec, result) in run.decisions.items():
            if record_pass(s, sid, dec, result):
                recorded += 1
                if dec.embedding is not None:
                    replace_embedding(s, sid, dec.clip_model, dec.embedding)
    return recorded


def _summary(brand: str, run: _Pass, shots: dict[int, Shot], dry_run: bool) -> dict[str, Any]:
    outcomes = Counter(result for _, result in run.decisions.values())
    changed = [
        {
            "shot_id": sid,
            "state": shots[sid].state,
            "was": shots[sid].filter_result.decision,  # type: ignore[union-attr]
            "now": dec.decision,
            "outcome": result,
            "reasons": list(dec.reasons),
        }
        for sid, (dec, result) in run.decisions.items()
        if dec.decision != shots[sid].filter_result.decision  # type: ignore[union-attr]
    ]
    return {
        "brand": brand,
        "dry_run": dry_run,
        "shots": len(shots),
        "modes": dict(run.modes),
        "outcomes": dict(outcomes),
        "changed": changed,
    }


def _print(summary: dict[str, Any]) -> None:
    table = Table(
        title=f"gate rescore {clean(summary['brand'])}" + (" (dry run)" * summary["dry_run"])
    )
    table.add_column("", justify="left")
    table.add_column("shots", justify="right")
    for name, n in sorted(summary["modes"].items()):
        table.add_row(name, str(n))
    for name, n in sorted(summary["outcomes"].items()):
        table.add_row(f"outcome: {name}", str(n))
    console.print(table)
    for c in summary["changed"]:
        note = " (kept: review it)" if c["outcome"] in ("attention", "now_passes") else ""
        console.print(
            f"shot {c['shot_id']} ({c['state']}): {c['was']} -> {c['now']} "
            f"{clean(', '.join(c['reasons']) or '-')}{note}",
            markup=False,
            highlight=False,
        )


@gate_app.command("rescore")
def rescore(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="Brand whose gated shots to re-decide."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Apply the brand's current gate policy to its gated shots (stored scores when only
    thresholds changed, else the stored final image encoded again)."""
    state = cli_state(ctx)
    wctx = WorkerContext(
        settings=state.settings, engine=state.engine, sessions=state.sessionmaker()
    )
    with wctx.sessions() as s:
        try:
            cfg = wctx.brand_config(brand, stored_brand_configs(s, [brand]).get(brand))
            the_gate = wctx.gate()
            policy = the_gate.policy_for(cfg)
        except (BrandConfigError, GateError) as exc:
            fail(f"brand {brand!r}: {exc}")
        clip_model = str(getattr(the_gate, "clip_model", ""))
        shots = rescore_candidates(s, brand)
        run = _Pass()
        with Progress(
            TextColumn("rescore"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("rescore", total=len(shots))
            to_encode = _redecide_or_queue(shots, policy, clip_model, run, progress, task)
            if to_encode:
                _encode(wctx, s, to_encode, policy, run, progress, task)
        summary = _summary(brand, run, {sh.id: sh for sh in shots}, dry_run)
    if not dry_run:
        summary["recorded"] = _record(wctx, run)
    print_json(summary) if as_json else _print(summary)
