"""Packshot inputs for the GPU step: each shot's source image, from the blob store.

Kept apart from ``tasks.steps`` so the generate step calls it in a few lines. A source still
``pending`` (the fetch step has not reached it) is fetched here, with the same code and
policy as ``shotline.fetch_sources``; one that failed fails its shots with the fetch's reason,
which names the URL.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from sqlalchemy import select

from catalog.models import Shot, ShotState, SourceImage, SourceStatus
from catalog.shots import lock_shots, mark_failed
from pipeline.digests import sha256_bytes
from pipeline.images import ImageError, decode_image
from pipeline.packshot.composite import composite
from pipeline.packshot.cutout import Cutout, CutoutError, MatteModel, cut_out
from pipeline.packshot.fidelity import (
    MIN_PSNR_DB,
    Fidelity,
    check_exact,
    check_psnr,
    clip_similarity,
)
from pipeline.packshot.placement import Placed, PlacementSpec, place
from pipeline.sources.decode import DecodedSource, decode_source
from pipeline.types import FilterDecision, GenerationOutput, ShotParams
from tasks.context import WorkerContext
from tasks.sources.fetching import fetch_sources


@dataclass(frozen=True)
class PackshotSource:
    source_id: int
    url: str
    sha256: str
    decoded: DecodedSource


@dataclass(frozen=True)
class _Row:
    id: int
    url: str
    status: str
    sha256: str | None
    blob_key: str | None
    error: str | None


def _rows(ctx: WorkerContext, ids: set[int]) -> dict[int, _Row]:
    with ctx.sessions.begin() as s:
        return {
            r.id: _Row(r.id, r.url, r.status, r.sha256, r.blob_key, r.error)
            for r in s.scalars(select(SourceImage).where(SourceImage.id.in_(ids)))
        }


def _load(ctx: WorkerContext, row: _Row) -> PackshotSource | str:
    """The decoded source, or the one-line reason it cannot be used."""
    if row.status == SourceStatus.failed.value:
        return f"source image {row.error or row.url + ': fetch failed'}"
    if row.status != SourceStatus.fetched.value or not row.blob_key or not row.sha256:
        return f"source image {row.url}: not fetched"
    try:
        data = ctx.store.get(row.blob_key)
    except FileNotFoundError:
        return f"source image {row.url}: its blob {row.blob_key} is missing (fetch again)"
    if sha256_bytes(data) != row.sha256:
        return f"source image {row.url}: blob {row.blob_key} does not match its sha256"
    try:
        decoded = decode_source(data, row.url, ctx.settings.source_max_pixels)
    except ImageError as exc:
        return f"source image {exc}"
    return PackshotSource(row.id, row.url, row.sha256, decoded)


def load_packshot_sources(
    ctx: WorkerContext, wanted: Mapping[int, int]
) -> tuple[dict[int, PackshotSource], dict[int, str]]:
    """``{shot id: source image id}`` -> the loaded sources and the failures, by shot id.
    Each distinct source is read and decoded once, whatever number of shots use it."""
    if not wanted:
        return {}, {}
    rows = _rows(ctx, set(wanted.values()))
    pending = [i for i, r in rows.items() if r.status == SourceStatus.pending.value]
    if pending:
        fetch_sources(ctx, pending)
        rows.update(_rows(ctx, set(pending)))
    loaded = {sid: _load(ctx, row) for sid, row in rows.items()}
    ready: dict[int, PackshotSource] = {}
    errors: dict[int, str] = {}
    for shot_id, source_id in wanted.items():
        got = loaded.get(source_id, f"source image {source_id} no longer exists")
        if isinstance(got, str):
            errors[shot_id] = " ".join(got.split())
        else:
            ready[shot_id] = got
    return ready, errors


def packshot_sources(shots: Sequence[Shot]) -> dict[int, int]:
    """``{shot id: source image id}`` of the packshot shots among ``shots``."""
    return {s.id: s.source_image_id for s in shots if s.source_image_id is not None}


def fail_unsourced(ctx: WorkerContext, errors: Mapping[int, str]) -> list[int]:
    """Shots whose source image cannot be used end ``failed`` with the reason (a bad input:
    retrying would fetch the same 404). Returns their ids."""
    if not errors:
        return []
    with ctx.sessions.begin() as s:
        shots = lock_shots(s, list(errors), (ShotState.generating,))
        for shot in shots:
            mark_failed(shot, errors[shot.id])
        return [shot.id for shot in shots]


def mask_key(sha256: str) -> str:
    """Cutout masks are content-addressed like sources: the same cutout is stored once."""
    return f"masks/{sha256[:2]}/{sha256}.png"


def put_mask(ctx: WorkerContext, png: bytes) -> tuple[str, str]:
    """Store a cutout mask (PNG bytes); returns ``(key, sha256)``."""
    sha = sha256_bytes(png)
    key = mask_key(sha)
    if not ctx.store.exists(key):
        ctx.store.put(key, png, content_type="image/png")
    return key, sha


def note_packshot(shot: Shot, info: Mapping[str, Any] | None) -> None:
    """Record what a packshot shot was made with on its row, in the caller's transaction:
    the cutout (method, params, mask sha256 and key, confidence), the placement as applied
    (box, canvas, placed image and alpha keys), the source sha256 and the exact check."""
    if info:
        shot.packshot = {**(shot.packshot or {}), **info}


# --- cutout -> placement before generation, composite after --------------------------------


@dataclass(frozen=True)
class PackshotJob:
    """One packshot shot's inputs: its source, the product cut out of it, and the canvas."""

    shot_id: int
    source: PackshotSource
    cutout: Cutout
    placed: Placed
    packshot: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the shot's plan


def placement_spec(data: Mapping[str, Any] | None) -> PlacementSpec:
    """The spec a shot recorded at plan time (unknown keys ignored, the rest defaulted)."""
    known = {f.name for f in fields(PlacementSpec)}
    values = {k: v for k, v in (data or {}).items() if k in known}
    if "fill" in values:
        values["fill"] = tuple(int(c) for c in values["fill"])
    return PlacementSpec(**values)


def prepare_jobs(
    ctx: WorkerContext, shots: Sequence[Shot]
) -> tuple[dict[int, PackshotJob], dict[int, str]]:
    """Cut out and place the product of every packshot shot in ``shots`` (each source cut
    once). Returns the jobs and, per shot that cannot run, the one-line reason."""
    sources, errors = load_packshot_sources(ctx, packshot_sources(shots))
    try:
        matte = _matte(ctx.settings.matte_model) if sources else None
    except CutoutError as exc:  # a bad SHOTLINE_MATTE_MODEL: every packshot shot says so
        return {}, {**errors, **{sid: f"cutout: {exc}" for sid in sources}}
    cutouts: dict[int, Cutout | str] = {}
    jobs: dict[int, PackshotJob] = {}
    for shot in shots:
        src = sources.get(shot.id)
        if src is None:
            continue
        cut = cutouts.get(src.source_id)
        if cut is None:
            try:
                cut = cut_out(src.decoded.image, matte=matte, what=src.url)
            except (CutoutError, ValueError) as exc:
                cut = f"cutout: {exc}"
            cutouts[src.source_id] = cut
        if isinstance(cut, str):
            errors[shot.id] = cut
            continue
        spec = placement_spec((shot.packshot or {}).get("placement"))
        try:
            placed = place(cut, spec, int(shot.width), int(shot.height))
        except (ValueError, cv2.error) as exc:
            errors[shot.id] = f"placement of {src.url}: {exc}"
            continue
        jobs[shot.id] = PackshotJob(shot.id, src, cut, placed, dict(shot.packshot or {}))
    return jobs, errors


@functools.lru_cache(maxsize=2)
def _matte(path: Path | None) -> MatteModel | None:
    """The learned matte (a local ONNX model), loaded once per process; None when unset."""
    if path is None:
        return None
    from pipeline.packshot.onnx_matte import load_matte

    return load_matte(path)


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def _record(ctx: WorkerContext, job: PackshotJob, exact: Fidelity) -> dict[str, Any]:
    """Store the cutout mask and the placed canvas; what the shot records about them."""
    cut_key, cut_sha = put_mask(ctx, _png(job.cutout.alpha, "L"))
    placed_key, _ = put_mask(ctx, _png(job.placed.rgb, "RGB"))
    alpha_key, _ = put_mask(ctx, _png(job.placed.alpha, "L"))
    return {
        "cutout": {**job.cutout.lineage(), "mask_key": cut_key, "mask_png_sha256": cut_sha},
        "placed": {**job.placed.lineage(), "image_key": placed_key, "alpha_key": alpha_key},
        "source_sha256": job.source.sha256,
        "fidelity": {"exact": exact.to_json()},
    }


def composite_output(
    ctx: WorkerContext, out: GenerationOutput, job: PackshotJob
) -> tuple[GenerationOutput, dict[str, Any]]:
    """A stand-in generator's scene (no inpainting pipeline) with the product's own pixels
    pasted back, checked bit for bit inside the eroded mask, and what the shot records."""
    if out.error or out.image is None:
        return out, {}
    scene = out.image
    if scene.size != job.placed.rgb.shape[1::-1]:
        scene = scene.convert("RGB").resize(job.placed.rgb.shape[1::-1], Image.Resampling.NEAREST)
    final = composite(scene, job.placed)
    exact = check_exact(final, job.placed.rgb, job.placed.core)
    if not exact.ok:
        return dataclasses.replace(out, image=None, png=None, error=exact.reason), {}
    return dataclasses.replace(out, image=final, png=None, sha256=None), _record(ctx, job, exact)


# --- the generate step's hooks ---------------------------------------------------------------


def job_stub(shot: Shot) -> Shot | None:
    """A detached copy of what ``prepare_jobs`` reads (taken inside the claim transaction,
    used after it committed: a fetch must never wait on the claim's locks)."""
    if shot.source_image_id is None:
        return None
    return Shot(
        id=shot.id,
        source_image_id=shot.source_image_id,
        packshot=dict(shot.packshot or {}),
        width=shot.width,
        height=shot.height,
    )


def prepare_batch(
    ctx: WorkerContext, stubs: Sequence[Shot], params: Sequence[ShotParams], failed: list[int]
) -> tuple[dict[int, PackshotJob], list[ShotParams]]:
    """Before generation: the batch's packshot jobs and the params still to generate; shots
    whose source or cutout is unusable end ``failed`` (their ids join ``failed``)."""
    if not stubs:
        return {}, list(params)
    jobs, errors = prepare_jobs(ctx, stubs)
    failed += fail_unsourced(ctx, errors)
    return jobs, [p for p in params if p.shot_id not in errors]


_inpainters: dict[int, Any] = {}  # id(generator) -> Inpainter sharing its modules


def _inpainter(generator: Any) -> Any:
    from pipeline.generate.inpaint import Inpainter

    key = id(generator)
    if key not in _inpainters:
        _inpainters[key] = Inpainter(generator)
    return _inpainters[key]


def generate_packshots(
    ctx: WorkerContext,
    model_id: str,
    group: list[ShotParams],
    jobs: Mapping[int, PackshotJob],
    batch_id: str,
) -> tuple[list[GenerationOutput], dict[int, dict[str, Any]]]:
    """One model's packshot shots: inpainted around the placed product (diffusers'
    inpainting pipeline on the loaded model, each shot with its own image and mask), the
    product composited back. A stand-in generator without a pipeline generates the scene
    and the product is composited over it. Returns the outputs and what each shot records.
    A brand's ``inpaint_model`` (recorded on the shot at plan time) is loaded once and used
    instead of the base model's own modules; a brand's ControlNet (recorded likewise)
    conditions its shots' batches on the packshot's edges (a stand-in generator, which has
    no pipeline, ignores it)."""
    chosen = {(jobs[p.shot_id].packshot.get("inpaint_model") or model_id) for p in group}
    use = sorted(chosen)[0] if len(chosen) == 1 else model_id
    if use != model_id:
        group = [dataclasses.replace(p, model_id=use) for p in group]
    generator = ctx.generator(use)
    notes: dict[int, dict[str, Any]] = {}
    if getattr(generator, "pipe", None) is None:
        outs = generator.generate(group, batch_id=batch_id)
        done = []
        for out in outs:
            out, info = composite_output(ctx, out, jobs[out.shot_id])
            done.append(out)
            if info:
                notes[out.shot_id] = info
        return done, notes
    from pipeline.generate.controlnet import ControlSpec
    from pipeline.generate.inpaint import InpaintShot

    # Shots planned with different ControlNets (or none) never share a denoising batch.
    by_control: dict[str, tuple[ControlSpec | None, list[ShotParams]]] = {}
    for p in group:
        spec = ControlSpec.from_json(jobs[p.shot_id].packshot.get("controlnet"))
        by_control.setdefault(spec.key() if spec else "", (spec, []))[1].append(p)
    results = []
    for spec, part in by_control.values():
        shots = [InpaintShot(p, jobs[p.shot_id].placed) for p in part]
        results += _inpainter(generator).generate(shots, batch_id=batch_id, control=spec)
    outputs = []
    for res in results:
        out, fid = res.output, res.fidelity
        if not out.error and fid is not None and not fid.ok:
            out = dataclasses.replace(out, image=None, png=None, error=fid.reason)
        elif not out.error and fid is not None:
            notes[out.shot_id] = _record(ctx, jobs[out.shot_id], fid)
        outputs.append(out)
    return outputs, notes


# --- the gate's hook: product fidelity -----------------------------------------------------


def _stored_array(ctx: WorkerContext, key: Any, mode: str) -> np.ndarray | None:
    if not key:
        return None
    try:
        return np.asarray(decode_image(ctx.store.get(str(key)), mode=mode), dtype=np.uint8)
    except (FileNotFoundError, ImageError):
        return None


def fidelity_scores(
    ctx: WorkerContext,
    packshot: Mapping[str, Any],
    raw: Image.Image,
    final: bytes,
    placed_now: Placed | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The product-fidelity scores of one packshot shot and the reasons it fails: inside
    the eroded product mask the raw image equals the placed source bit for bit, and the
    final (watermarked) file is within ``MIN_PSNR_DB`` of it. The placed canvas and alpha
    are read back from the store, unless the caller still holds them (``placed_now``: the
    GPU host, which made them)."""
    placed = packshot.get("placed") or {}
    canvas: np.ndarray | None
    alpha: np.ndarray | None
    if placed_now is not None:
        canvas, alpha = placed_now.rgb, placed_now.alpha
    else:
        canvas = _stored_array(ctx, placed.get("image_key"), "RGB")
        alpha = _stored_array(ctx, placed.get("alpha_key"), "L")
    if canvas is None or alpha is None:
        return [], ["product fidelity: the placed source or its mask is missing from the store"]
    core = alpha == 255
    try:
        exact = check_exact(raw, canvas, core)
        after = check_psnr(decode_image(final, mode="RGB"), canvas, core)
    except (ValueError, ImageError) as exc:
        return [], [f"product fidelity: {exc}"]
    psnr_db = after.psnr_db if after.psnr_db is not None and math.isfinite(after.psnr_db) else 99.0
    scores = [
        {
            "name": "product_pixels_changed",
            "kind": "fidelity",
            "score": float(exact.mismatched),
            "threshold": 0.0,
            "triggered": not exact.ok,
        },
        {
            "name": "product_psnr_db",
            "kind": "fidelity",
            "score": float(psnr_db),
            "threshold": MIN_PSNR_DB,
            "triggered": not after.ok,
        },
    ]
    encoder = _gate_encoder(ctx)
    if encoder is not None:  # the real gate: how alike CLIP finds product and packshot
        similarity = clip_similarity(encoder, raw, canvas, core)
        if similarity is not None:
            scores.append(
                {
                    "name": "product_clip_similarity",
                    "kind": "fidelity",
                    "score": similarity,
                    "threshold": None,  # recorded, not a cut: the pixel checks decide
                    "triggered": False,
                }
            )
    return scores, [r for r in (exact.reason, after.reason) if r]


def _gate_encoder(ctx: WorkerContext) -> Any:
    """The gate's CLIP image encoder, or None for gates without one (the stand-ins)."""
    clip_filter = getattr(ctx.gate(), "filter", None)
    return getattr(clip_filter, "encoder", None)


def check_fidelity(
    ctx: WorkerContext,
    packshots: Mapping[int, Mapping[str, Any]],
    raws: Mapping[int, Image.Image],
    finals: Mapping[int, bytes],
    decisions: dict[int, FilterDecision],
    jobs: Mapping[int, PackshotJob] | None = None,
) -> None:
    """Add the fidelity scores to each packshot shot's decision; a shot that fails is
    rejected with the reason (in place). ``jobs``: the shots' placements still in memory."""
    for sid, packshot in packshots.items():
        if sid not in decisions or sid not in finals:
            continue
        job = (jobs or {}).get(sid)
        placed_now = job.placed if job is not None else None
        scores, reasons = fidelity_scores(ctx, packshot, raws[sid], finals[sid], placed_now)
        dec = decisions[sid]
        decisions[sid] = dataclasses.replace(
            dec,
            decision="rejected" if reasons else dec.decision,
            scores=[*dec.scores, *scores],
            reasons=[*dec.reasons, *reasons],
        )
