"""Output size apart from the model size, through the whole embedded line on the tiny preset
(random weights: the scenes are noise): planning records the output size and the second pass
on each shot (``shots.hires``), text and packshot shots end at the output size (the packshot's
product composited there from its source), lineage shows the pass, and reproduce gives the
same bytes on the CPU."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.importing.importer import import_catalog
from catalog.models import Shot
from catalog.planning import plan_shots
from pipeline.brand.config import OutputSpec
from pipeline.brand.loader import find_brand
from pipeline.settings import Settings
from tasks.cli.app import app
from tasks.context import context_for, reset_contexts
from tasks.runner import run_line
from tests.tasks.conftest import cli_env

ROOT = Path(__file__).resolve().parents[2]
OUT = 128  # the tiny preset's native size is 64


def test_hires_shots_plan_run_trace_and_reproduce(tmp_settings: Settings) -> None:
    settings = tmp_settings.model_copy(
        update={
            "source_roots": [ROOT / "samples"],
            "gate_factory": "tasks.fakes:pass_through_gate",
            "store_raw": True,  # reproduce compares pixels with it on a mismatch
        }
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    brand = find_brand(settings.brands_dir, "acme")
    output = OutputSpec(width=OUT, height=OUT, strength=0.4, steps=4)
    templates = dict(brand.templates)
    for name in ("hero_white", "packshot_white"):
        update = {"output": output, "width": 64, "height": 64}  # small: 2 shared cores
        templates[name] = templates[name].model_copy(update=update)
    brand = brand.model_copy(update={"templates": templates})
    import_catalog(ctx.sessions, ROOT / "samples" / "catalog.csv", brand)
    with ctx.sessions.begin() as s:
        plan_shots(s, brand, settings, templates=["hero_white", "packshot_white", "flat_lay"])
    with ctx.sessions() as s:
        shots = list(s.scalars(select(Shot)))
        recorded = {sh.template_name: (sh.width, sh.height, sh.hires) for sh in shots}
    spec = {"width": OUT, "height": OUT, "strength": 0.4, "steps": 4, "upscale": "lanczos"}
    assert recorded["hero_white"] == (64, 64, spec)
    assert recorded["packshot_white"] == (64, 64, spec)
    native = brand.resolve_template("flat_lay")
    # No output: the native size, one pass, as before.
    assert recorded["flat_lay"] == (native.width, native.height, {})

    summary = run_line(settings, progress=False)
    assert summary.counts.get("pending_review", 0) >= 3, summary.failures
    picked: dict[str, int] = {}
    with ctx.sessions() as s:
        for sh in s.scalars(select(Shot).where(Shot.state == "pending_review")):
            assert sh.generation is not None and sh.watermark is not None
            raw = Image.open(io.BytesIO(ctx.store.get(sh.generation.blob_key)))
            final = Image.open(io.BytesIO(ctx.store.get(sh.watermark.image_key)))
            flat = sh.template_name == "flat_lay"
            want = (native.width, native.height) if flat else (OUT, OUT)
            assert raw.size == want and final.size == want, sh.template_name
            if sh.source_image_id is not None:
                placed = sh.packshot["placed"]
                assert placed["size"] == [OUT, OUT] and placed["model_size"] == [64, 64]
                canvas = np.asarray(Image.open(io.BytesIO(ctx.store.get(placed["image_key"]))))
                alpha = np.asarray(Image.open(io.BytesIO(ctx.store.get(placed["alpha_key"]))))
                core = alpha == 255
                assert core.any()
                assert np.array_equal(np.asarray(final.convert("RGB"))[core], canvas[core])
            picked.setdefault(sh.template_name, sh.id)
    assert {"hero_white", "packshot_white", "flat_lay"} <= set(picked)

    env = cli_env(settings)
    runner = CliRunner()
    lineage = runner.invoke(app, ["lineage", f"shot:{picked['hero_white']}", "--json"], env=env)
    assert lineage.exit_code == 0, lineage.stdout + lineage.stderr
    assert json.dumps(spec, sort_keys=True)[1:-1] in json.dumps(
        json.loads(lineage.stdout), sort_keys=True
    )
    for name in ("hero_white", "packshot_white"):
        res = runner.invoke(app, ["reproduce", str(picked[name]), "--json"], env=env)
        assert res.exit_code == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["match"] is True
