"""The packshot part of the GPU step on the sample packshots: source -> cutout -> placement,
then the generated scene composited with the product's own pixels, bit for bit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from catalog import migrate
from catalog.models import Shot
from catalog.packshots.sources import ensure_source_images
from pipeline.settings import Settings
from pipeline.types import GenerationOutput
from tasks.context import context_for
from tasks.sources.packshot import composite_output, placement_spec, prepare_jobs
from tests.conftest import ROOT

PACKSHOTS = ROOT / "samples" / "packshots"


def _shot(shot_id: int, source_id: int, placement: dict[str, object], size: int = 64) -> Shot:
    return Shot(
        id=shot_id,
        source_image_id=source_id,
        packshot={"image": "first", "placement": placement},
        width=size,
        height=size,
    )


def _noise(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def test_cutout_place_composite(tmp_settings: Settings, tmp_path: Path) -> None:
    settings = tmp_settings.model_copy(update={"source_roots": [ROOT / "samples", tmp_path]})
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
    assert "background is not uniform" in errors[4] and urls[2] in errors[4]
    assert errors[5].startswith(f"source image {urls[3]}: ") and "not found" in errors[5]
    for job in jobs.values():
        size = job.placed.rgb.shape[0]
        out = GenerationOutput(
            job.shot_id, _noise(size, job.shot_id), None, None, "d", {}, "cpu", {}, "b"
        )
        done, info = composite_output(ctx, out, job)
        px = np.asarray(done.image)
        core = job.placed.core
        assert core.any() and np.array_equal(px[core], job.placed.rgb[core])
        assert info["fidelity"]["exact"]["ok"] and info["source_sha256"] == job.source.sha256
        mask = Image.open(io.BytesIO(ctx.store.get(info["cutout"]["mask_key"])))
        assert mask.size == (512, 512) and info["cutout"]["mask_sha256"]
        assert info["placed"]["size"] == [size, size]
    assert placement_spec({"scale": 0.3, "fill": [1, 2, 3], "bogus": 1}).fill == (1, 2, 3)


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
    assert not jobs and "absent.onnx: matte model not found" in errors[1]
