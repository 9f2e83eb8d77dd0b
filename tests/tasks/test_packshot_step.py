"""The packshot part of the GPU step on the sample packshots: source -> cutout -> placement,
then the generated scene composited with the product's own pixels, bit for bit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from catalog import migrate
from catalog.packshots.sources import ensure_source_images
from pipeline.failures import FailureKind
from pipeline.packshot.records import PackshotPlan
from pipeline.packshot.stage import composite_checked
from pipeline.settings import Settings
from tasks.context import context_for
from tasks.line.claim import PackshotShot
from tasks.line.finalize import packshot_record
from tasks.line.prepare import prepare_jobs
from tests.conftest import ROOT

PACKSHOTS = ROOT / "samples" / "packshots"


def _shot(
    shot_id: int, source_id: int, placement: dict[str, object], size: int = 64
) -> PackshotShot:
    plan = PackshotPlan.from_json({"image": "first", "placement": placement})
    return PackshotShot(shot_id, source_id, plan, size, size)


def _noise(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def test_cutout_place_composite(tmp_settings: Settings, tmp_path: Path) -> None:
    # The default method's own refusals (no learned matte: tests/pipeline/test_matte_real.py).
    settings = tmp_settings.model_copy(
        update={"source_roots": [ROOT / "samples", tmp_path], "matte_fallback": "none"}
    )
    migrate.upgrade(settings.database_url)
    ctx = context_for(settings)
    busy = tmp_path / "lifestyle.png"
    _noise(96, 1).save(busy)
    urls = [
        (PACKSHOTS / "mug.png").as_uri(),
        (PACKSHOTS / "ball.png").as_uri(),  # transparent: its own alpha
        busy.as_uri(),
        (tmp_path / "gone.png").as_uri(),
    ]
    with ctx.sessions.begin() as s:
        ids = ensure_source_images(s, urls)
    shots = [
        _shot(1, ids[urls[0]], {"scale": 0.6, "shadow": "contact", "anchor": "bottom"}),
        _shot(2, ids[urls[0]], {"scale": 0.4}, size=96),
        _shot(3, ids[urls[1]], {"scale": 0.5, "fill": [240, 240, 240]}),
        _shot(4, ids[urls[2]], {}),
        _shot(5, ids[urls[3]], {}),
    ]
    jobs, errors = prepare_jobs(ctx, shots)
    assert set(jobs) == {1, 2, 3}
    assert jobs[1].cutout is jobs[2].cutout  # one cutout per source
    assert jobs[1].cutout.method == "flood_grabcut" and jobs[3].cutout.method == "alpha"
    reasons = {sid: f.reason for sid, f in errors.items()}
    assert "background is not uniform" in reasons[4] and urls[2] in reasons[4]
    assert reasons[5].startswith(f"source image {urls[3]}: ") and "not found" in reasons[5]
    assert errors[4].kind == FailureKind.cutout_refused
    assert errors[5].kind == FailureKind.source_unavailable
    for job in jobs.values():
        size = job.placed.rgb.shape[0]
        done, exact = composite_checked(_noise(size, job.shot_id), job.placed)
        info = packshot_record(ctx, job, exact).to_json()
        px = np.asarray(done)
        core = job.placed.core
        assert core.any() and np.array_equal(px[core], job.placed.rgb[core])
        assert info["fidelity"]["exact"]["ok"] and info["source_sha256"] == job.source.sha256
        mask = Image.open(io.BytesIO(ctx.store.get(info["cutout"]["mask_key"])))
        assert mask.size == (512, 512) and info["cutout"]["mask_sha256"]
        assert info["placed"]["size"] == [size, size]
    plan = PackshotPlan.from_json({"placement": {"scale": 0.3, "fill": [1, 2, 3], "bogus": 1}})
    assert plan.placement_spec().fill == (1, 2, 3)


def test_a_bad_matte_model_fails_the_packshot_shots(tmp_settings: Settings, tmp_path: Path) -> None:
    settings = tmp_settings.model_copy(
        update={"source_roots": [ROOT / "samples"], "matte_model": tmp_path / "absent.onnx"}
    )
    migrate.upgrade(settings.database_url)
    ctx = context_for(settings)
    url = (PACKSHOTS / "mug.png").as_uri()
    with ctx.sessions.begin() as s:
        sid = ensure_source_images(s, [url])[url]
    jobs, errors = prepare_jobs(ctx, [_shot(1, sid, {})])
    assert not jobs and "absent.onnx: matte model not found" in errors[1].reason
    assert errors[1].kind == FailureKind.cutout_refused
