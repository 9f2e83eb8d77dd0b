"""``shotline reproduce SHOT_ID``: regenerate a shot from its recorded parameters.

The new image's sha256 is compared with the raw image sha256 recorded at generation time.
On the CPU with the tiny preset the match is exact; across devices or library versions a
mismatch reports how far the pixels moved. Exit status: 0 on a match, 1 on a mismatch.

Batched diffusion is not bit-identical to single-image diffusion (batched kernels sum in
another order: a pixel can move by one), so by default the shot is regenerated together with
the shots it was generated with (same ``batch_id`` and model, in id order), which is how the
line called the generator. ``--alone`` regenerates only this shot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from tasks.cli.common import (
    MAX_ID,
    CliState,
    cli_state,
    console,
    err_console,
    fail,
    print_json,
)

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.types import GenerationOutput, ShotParams


@dataclass(frozen=True)
class _Recorded:
    """What the line recorded when it generated the shot."""

    sha256: str
    key: str
    model_digest: str | None
    device: str
    library_versions: dict[str, Any]
    packshots: list[Any]  # the batch's packshot shots (tasks.line.claim.PackshotShot)


def _load(
    state: CliState, shot_id: int, alone: bool
) -> tuple[ShotParams, list[ShotParams], _Recorded]:
    """The shot's parameters, the batch to regenerate it in, and its recorded raw image."""
    from catalog.lineage import batch_mates, shot_with_generation
    from catalog.shots import shot_params
    from tasks.line.claim import PackshotShot

    with state.session() as s:
        shot = shot_with_generation(s, shot_id)
        if shot is None:
            fail(f"shot {shot_id}: no such shot")
        gen = shot.generation
        if gen is None:
            fail(f"shot {shot_id}: nothing to compare with (state {shot.state}, no raw image)")
        params = shot_params(shot)
        batch, mates = [params], [shot]
        if not alone and gen.batch_id:
            mates = list(batch_mates(s, shot)) or [shot]
            batch = [shot_params(m) for m in mates]
        # Packshot and text-to-image shots never share a generator call: keep this shot's kind.
        kind = shot.source_image_id is not None
        keep = {m.id for m in mates if (m.source_image_id is not None) == kind} | {shot.id}
        batch = [p for p in batch if p.shot_id in keep]
        stubs = [st for m in mates if m.id in keep and (st := PackshotShot.of(m)) is not None]
        recorded = _Recorded(
            sha256=gen.sha256,
            key=gen.blob_key,
            model_digest=gen.model_digest or shot.model_digest,
            device=gen.device,
            library_versions=dict(gen.library_versions or {}),
            packshots=stubs,
        )
    return params, batch, recorded


def _packshot_outputs(
    ctx: Any, shot_id: int, params: ShotParams, batch: list[ShotParams], stubs: list[Any]
) -> list[GenerationOutput]:
    """A packshot batch again: cutout and placement from the stored source blobs, then the
    same inpainting and composite as the line."""
    from tasks.line.generate import regenerate
    from tasks.line.prepare import prepare_jobs

    jobs, errors = prepare_jobs(ctx, stubs)
    if shot_id in errors:
        fail(f"shot {shot_id}: {errors[shot_id].reason}")
    batch = [p for p in batch if p.shot_id in jobs]
    return regenerate(ctx, batch, jobs, f"reproduce-{shot_id}")


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    # On stderr: --json keeps stdout to itself. Transient: the report replaces it.
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def _denoise_steps(generator: Any, batch: list[ShotParams]) -> tuple[Any, int | None]:
    """The module called once per denoising step, and how many calls this batch makes; None
    when the generator has no such module (a stand-in generator)."""
    import math

    pipe = getattr(generator, "pipe", None)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if denoiser is None or not hasattr(denoiser, "register_forward_hook") or not batch:
        return None, None
    from pipeline.generate.batch_table import batch_size_for

    first = batch[0]
    try:
        size = batch_size_for(generator.settings, generator.architecture, first.width, first.height)
    except Exception:  # an estimate only: the bar then just has no total
        return denoiser, None
    return denoiser, first.steps * math.ceil(len(batch) / max(1, size))


def _generate_with_bar(
    bar: Any, ctx: Any, shot_id: int, params: ShotParams, batch: list[ShotParams]
) -> list[GenerationOutput]:
    """Load the model (its own phase), then denoise with the bar advanced per step."""
    loading = bar.add_task(f"loading {escape(params.model_id)}", total=None)
    generator = ctx.generator(params.model_id)
    bar.remove_task(loading)
    denoiser, total = _denoise_steps(generator, batch)
    task = bar.add_task(f"regenerating {len(batch)} shot(s)", total=total)
    hook = None
    if denoiser is not None:
        hook = denoiser.register_forward_hook(lambda *_: bar.advance(task))
    try:
        return list(generator.generate(batch, batch_id=f"reproduce-{shot_id}"))
    finally:
        if hook is not None:
            hook.remove()


def _regenerate(
    settings: Settings,
    shot_id: int,
    params: ShotParams,
    batch: list[ShotParams],
    stubs: list[Any] | None = None,
) -> tuple[GenerationOutput, bytes]:
    """Run the generator over the batch; this shot's output and its PNG bytes."""
    from tasks.context import WorkerContext

    with _progress() as bar:
        try:
            ctx = WorkerContext.build(settings)
            if stubs:
                bar.add_task(f"loading {escape(params.model_id)} and inpainting", total=None)
                outputs = _packshot_outputs(ctx, shot_id, params, batch, stubs)
            else:
                outputs = _generate_with_bar(bar, ctx, shot_id, params, batch)
            output = next(o for o in outputs if o.shot_id == shot_id)
        except (FileNotFoundError, ValueError) as exc:
            fail(f"shot {shot_id}: cannot load model {params.model_id!r}: {exc}")
    if output.error or (output.png is None and output.image is None):
        fail(f"shot {shot_id}: generation failed: {output.error or 'no image'}")
    png = output.png
    if png is None:
        from pipeline.generate.generator import encode_png

        assert output.image is not None  # checked above: no error means an image
        png = encode_png(output.image)
    return output, png


def _difference(
    settings: Settings, key: str, png: bytes
) -> tuple[dict[str, Any] | None, str | None]:
    """How far the pixels moved from the recorded raw image, or why that cannot be said."""
    from pipeline.review.imagediff import pixel_difference
    from pipeline.storage import make_blob_store

    if not key:  # gated on the GPU host without store_raw: only the sha256 was kept
        return None, "the raw image was not stored (store_raw off): no pixel comparison"
    try:
        return pixel_difference(make_blob_store(settings).get(key), png), None
    except FileNotFoundError:
        return None, f"the recorded raw image {key} is gone: no pixel comparison"


def _write(out: Path, png: bytes) -> None:
    from pipeline.outputs import OutputPathError, write_output_bytes

    try:
        write_output_bytes(out, png)  # beside the target, then renamed; no links, no FIFOs
    except OutputPathError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write: {exc.strerror or exc}")


def reproduce(
    ctx: typer.Context,
    shot_id: int = typer.Argument(..., metavar="SHOT_ID", min=1, max=MAX_ID),
    out: Path | None = typer.Option(None, "--out", help="Write the regenerated PNG here."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    alone: bool = typer.Option(
        False, "--alone", help="Regenerate only this shot, not its recorded batch."
    ),
) -> None:
    """Regenerate SHOT_ID and compare it with the recorded raw image (sha256, pixels)."""
    state = cli_state(ctx)
    params, batch, recorded = _load(state, shot_id, alone)
    output, png = _regenerate(state.settings, shot_id, params, batch, recorded.packshots)
    sha = hashlib.sha256(png).hexdigest()
    match = sha == recorded.sha256
    difference, note = (None, None) if match else _difference(state.settings, recorded.key, png)
    if out is not None:
        _write(out, png)
    report = {
        "shot_id": shot_id,
        "match": match,
        "recorded_sha256": recorded.sha256,
        "reproduced_sha256": sha,
        "model_id": params.model_id,
        "recorded_model_digest": recorded.model_digest,
        "model_digest": output.model_digest,
        "recorded_device": recorded.device,
        "device": output.device,
        "seed": params.seed,
        "batch_size": len(batch),
        "difference": difference,
        "note": note,
        "out": str(out) if out is not None else None,
    }
    if json_out:
        print_json(report)
    else:
        _print_report(report, recorded.library_versions, dict(output.library_versions or {}))
    if not match:
        raise typer.Exit(1)


def _print_report(r: dict[str, Any], old_libs: dict[str, Any], new_libs: dict[str, Any]) -> None:
    verdict = "[green]match: true[/]" if r["match"] else "[red]match: false[/]"
    mates = f" (regenerated with its batch of {r['batch_size']})" if r["batch_size"] > 1 else ""
    console.print(f"shot {r['shot_id']} {verdict}{mates}")
    console.print(f"recorded   sha256 {r['recorded_sha256']}  on {r['recorded_device']}")
    console.print(f"reproduced sha256 {r['reproduced_sha256']}  on {r['device']}")
    if r["recorded_model_digest"] and r["recorded_model_digest"] != r["model_digest"]:
        console.print(
            f"[yellow]model digest differs:[/] {r['recorded_model_digest']} -> {r['model_digest']}"
        )
    changed = {k: (old_libs.get(k), v) for k, v in new_libs.items() if old_libs.get(k) != v}
    if not r["match"] and changed and old_libs:
        console.print(
            "library versions differ: "
            + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(changed.items()))
        )
    d = r["difference"]
    if d is not None:
        if d["same_size"]:
            psnr = "inf" if d["psnr_db"] is None else f"{d['psnr_db']:.1f} dB"
            console.print(
                f"pixel difference: max {d['max_abs']}, mean {d['mean_abs']:.3f}, "
                f"{d['changed_fraction']:.1%} of pixels changed, PSNR {psnr}"
            )
        else:
            console.print(
                f"size differs: recorded {d['recorded_size']}, reproduced {d['reproduced_size']}"
            )
    if r["note"]:
        err_console.print(escape(str(r["note"])))
    if r["out"]:
        console.print(f"wrote {escape(str(r['out']))}", highlight=False)
