"""A brand with a ControlNet, through the whole embedded line on the tiny preset: planning
records the ControlNet (file, sha256, parameters) on each packshot shot, the shots are made
with it, lineage shows it, and reproduce gives the same bytes on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from catalog import migrate
from catalog.importing.importer import import_catalog
from catalog.models import Shot
from catalog.planning import plan_shots
from pipeline.brand.config import ControlNetSpec
from pipeline.brand.loader import find_brand
from pipeline.digests import sha256_file
from pipeline.generate.controlnet import TINY_CONTROLNET, controlnet_file
from pipeline.settings import Settings
from tasks.cli.app import app
from tasks.context import context_for, reset_contexts
from tasks.runner import run_line
from tests.tasks.conftest import cli_env

ROOT = Path(__file__).resolve().parents[2]


def test_controlnet_packshot_shots_plan_run_trace_and_reproduce(tmp_settings: Settings) -> None:
    settings = tmp_settings.model_copy(
        update={"source_roots": [ROOT / "samples"], "gate_factory": "tasks.fakes:pass_through_gate"}
    )
    migrate.upgrade(settings.database_url)
    reset_contexts()
    ctx = context_for(settings)
    brand = find_brand(settings.brands_dir, "acme")
    brand = brand.model_copy(update={"controlnet": ControlNetSpec(path=TINY_CONTROLNET, scale=1.0)})
    import_catalog(ctx.sessions, ROOT / "samples" / "catalog.csv", brand)
    with ctx.sessions.begin() as s:
        plan_shots(s, brand, settings, templates=["packshot_white"])
    with ctx.sessions() as s:
        shots = list(s.scalars(select(Shot).where(Shot.source_image_id.is_not(None))))
        recorded = [sh.packshot["controlnet"] for sh in shots]
    assert shots, "the sample catalog has packshot shots"
    weights = controlnet_file(TINY_CONTROLNET, settings)
    assert {(r["path"], r["sha256"], r["kind"], r["scale"]) for r in recorded} == {
        (str(weights), sha256_file(weights), "canny", 1.0)
    }

    summary = run_line(settings, progress=False)
    made = summary.counts.get("pending_review", 0)
    assert made >= 1, summary.failures  # local sample packshots (cdn.example.com ones fail)
    with ctx.sessions() as s:
        shot_id = s.scalars(
            select(Shot.id).where(Shot.source_image_id.is_not(None), Shot.state == "pending_review")
        ).first()
    assert shot_id is not None

    env = cli_env(settings)
    runner = CliRunner()
    lineage = runner.invoke(app, ["lineage", f"shot:{shot_id}"], env=env)
    assert lineage.exit_code == 0, lineage.stdout + lineage.stderr
    assert "controlnet canny" in lineage.stdout and sha256_file(weights)[:16] in lineage.stdout
    res = runner.invoke(app, ["reproduce", str(shot_id), "--alone", "--json"], env=env)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["match"] is True
