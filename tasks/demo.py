"""``make demo``: the whole line on embedded defaults, in ./var/demo, in about a minute.

import samples/catalog.csv (brand acme) -> plan -> run (tiny preset, in-process) ->
auto-approve (a DEMO reviewer, labelled as such) -> publish to the local blob folder ->
print the lineage of one asset and write a contact sheet.

The tiny preset's models have random weights: its images are noise, not product photos,
and its CLIP scores mean nothing. The demo shows the plumbing, never image quality.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "var" / "demo"
REVIEWER = "demo"
DEMO_NOTE = "DEMO auto-approval by `make demo` (no human looked at these tiny-model noise images)"
NOISE_WARNING = (
    "NOTE: the tiny preset uses randomly initialised models. Its images are random noise, "
    "NOT product photos, and its CLIP scores are meaningless. This demo exercises the "
    "production line (lineage, watermark, provenance, publishing), not image quality."
)


def _configure_env() -> None:
    """Point every SHOTLINE_* setting at ./var/demo before anything builds the settings."""
    env = {
        "SHOTLINE_DATABASE_URL": f"sqlite:///{DEMO_DIR / 'shotline.db'}",
        "SHOTLINE_VAR_DIR": str(DEMO_DIR),
        "SHOTLINE_BLOB_BACKEND": "local",
        "SHOTLINE_BLOB_ROOT": str(DEMO_DIR / "blobs"),
        "SHOTLINE_BRANDS_DIR": str(ROOT / "samples" / "brands"),
        # The tiny models are built once and cached beside the demo, shared with the tests.
        "SHOTLINE_MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "SHOTLINE_MODEL": "tiny",
        "SHOTLINE_CLIP_MODEL": "tiny",
        "SHOTLINE_REVIEWER": REVIEWER,
        # The demo approves as a named DEMO reviewer, not as the OS login running it.
        "SHOTLINE_REVIEW_FREE_NAMES": "true",
    }
    for key in [k for k in os.environ if k.startswith("SHOTLINE_")]:
        del os.environ[key]  # a developer's broker or Postgres must not leak into the demo
    os.environ.update(env)


def main() -> int:
    started = time.monotonic()
    _configure_env()
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)  # every demo starts from nothing
    DEMO_DIR.mkdir(parents=True)

    from rich.console import Console
    from rich.panel import Panel
    from sqlalchemy import select

    from catalog import migrate
    from catalog.importer import import_catalog
    from catalog.lineage import shot_lineage
    from catalog.models import Asset, Shot, ShotState
    from catalog.planning import describe_shots, plan_shots
    from catalog.review import approve, list_shots, resolve_reviewer
    from pipeline.brand.loader import find_brand
    from pipeline.settings import Settings
    from tasks.cli.common import CliState
    from tasks.cli.lineage_cmd import print_summary
    from tasks.cli.plan_cmd import plan_table
    from tasks.cli.review_cmd import write_contact_sheet
    from tasks.dispatch import enqueue_publish
    from tasks.runner import run_line

    console = Console()
    console.print(Panel(NOISE_WARNING, title="shotline demo", border_style="yellow"))
    settings = Settings()
    assert settings.embedded, "the demo runs in-process"
    state = CliState(settings)
    session = state.session

    def who(s: Any) -> Any:
        return resolve_reviewer(s, REVIEWER, free_names=settings.review_free_names)

    console.rule("1. database")
    migrate.upgrade(settings.database_url)
    console.print(f"SQLite at {settings.database_url}")

    console.rule("2. import samples/catalog.csv for brand acme")
    brand = find_brand(settings.brands_dir, "acme")
    summary = import_catalog(state.sessionmaker(), ROOT / "samples" / "catalog.csv", brand)
    console.print(
        f"import run {summary.run_id}: {summary.rows_total} rows, {summary.imported} products, "
        f"{summary.revisions_new} new revisions, {summary.errors} row errors"
    )

    console.rule("3. plan shots")
    with session() as s:
        plan = plan_shots(s, brand, settings)
        planned = describe_shots(s, plan.shots)
    console.print(plan_table(plan, planned, limit=12, wide=console.width >= 120))
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)

    console.rule("4. run: generate -> gate (tiny preset, in-process)")
    run = run_line(settings, brand="acme", progress=True)
    console.print(f"{run.total} shots in {run.elapsed_s:.1f}s: {run.counts}")

    console.rule(f"5. DEMO auto-approval (reviewer {REVIEWER!r})")
    with session() as s:
        pending = [sh.id for sh in list_shots(s, brand="acme", status="pending_review")]
        rejected = [sh.id for sh in list_shots(s, brand="acme", status="rejected")]
        if pending:
            approve(s, pending, who(s), note=DEMO_NOTE)
        if rejected:
            # Random-weight CLIP rejects noise at random; the demo overrides, and says so.
            approve(s, rejected, who(s), note=DEMO_NOTE + "; gate override", override=True)
    console.print(
        f"[yellow]DEMO[/]: auto-approved {len(pending)} pending and overrode {len(rejected)} "
        f"gate rejection(s) as reviewer {REVIEWER!r}. A real run needs a human reviewer."
    )

    console.rule("6. publish to the local blob folder")
    enqueue_publish(pending + rejected, settings)
    with session() as s:
        assets = list(s.scalars(select(Asset).order_by(Asset.id)))
        published = len(assets)
        failed = list(
            s.execute(
                select(Shot.id, Shot.error).where(Shot.state == ShotState.failed).order_by(Shot.id)
            )
        )
    console.print(f"{published} asset(s) under {settings.blob_root}")
    for sid, error in failed:
        console.print(f"[red]failed[/] shot {sid}: {error}", highlight=False)
    if not assets:
        console.print("[red]nothing was published[/]")
        return 1

    console.rule(f"7. lineage of asset {assets[0].id}")
    console.print(f"file: {Path(settings.blob_root) / assets[0].key}", highlight=False)
    with session() as s:
        chain = shot_lineage(s, assets[0].shot_id)
    assert chain is not None
    print_summary(chain)

    console.rule("8. contact sheet")
    sheet_dir = DEMO_DIR / "contact-sheet"
    write_contact_sheet(state, sheet_dir, brand="acme", status="published")

    console.print(Panel(NOISE_WARNING, border_style="yellow"))
    console.print(
        f"demo finished in {time.monotonic() - started:.0f}s; everything is in {DEMO_DIR}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
