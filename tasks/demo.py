"""``make demo``: the whole line on embedded defaults, in ./var/demo, in about a minute.

import samples/catalog.csv (brand acme) -> plan -> run (tiny preset, in-process) ->
auto-approve (a DEMO reviewer, labelled as such) -> publish to the local blob folder ->
print the lineage of one asset and write a contact sheet.

The tiny preset's models have random weights: its images are noise, not product photos,
and its CLIP scores mean nothing. The demo shows the plumbing, never image quality.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel

if TYPE_CHECKING:
    from catalog.models import Asset
    from pipeline.brand.config import BrandConfig
    from pipeline.settings import Settings
    from tasks.cli.common import CliState

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "var" / "demo"
SHEET_DIR = DEMO_DIR / "contact-sheet"
REVIEWER = "demo"
DEMO_NOTE = "DEMO auto-approval by `make demo` (no human looked at these tiny-model noise images)"
NOISE_WARNING = (
    "NOTE: the tiny preset uses randomly initialised models. Its images are random noise, "
    "NOT product photos, and its CLIP scores are meaningless. This demo exercises the "
    "production line (lineage, watermark, provenance, publishing), not image quality. "
    "Packshot shots (packshot_white, packshot_scene): the scene around the product is that "
    "noise; the product is the sample's own drawing (samples/packshots), its pixels kept. "
    "Sample products whose images are on cdn.example.com cannot be fetched here: their "
    "packshot shots fail with that reason, which is what a broken image link does."
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
        # The sample catalog names samples/packshots/* by relative path; only they are read.
        "SHOTLINE_SOURCE_ROOTS": json.dumps([str(ROOT / "samples")]),
        # Export URLs: the local blob folder stands in for the CDN in front of the bucket.
        "SHOTLINE_PUBLIC_BASE_URL": "https://cdn.example.com/acme-demo/",
    }
    for key in [k for k in os.environ if k.startswith("SHOTLINE_")]:
        del os.environ[key]  # a developer's broker or Postgres must not leak into the demo
    os.environ.update(env)


def _fresh_demo_dir() -> None:
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)  # every demo starts from nothing
    DEMO_DIR.mkdir(parents=True)


def _step_database(console: Console, settings: Settings) -> None:
    from catalog import migrate

    console.rule("1. database")
    migrate.upgrade(settings.database_url)
    console.print(f"SQLite at {settings.database_url}")


def _step_import(console: Console, state: CliState) -> BrandConfig:
    settings = state.settings
    from catalog.importing.importer import import_catalog
    from pipeline.brand.loader import find_brand

    console.rule("2. import samples/catalog.csv for brand acme")
    brand = find_brand(settings.brands_dir, "acme")
    summary = import_catalog(state.sessionmaker(), ROOT / "samples" / "catalog.csv", brand)
    console.print(
        f"import run {summary.run_id}: {summary.rows_total} rows, {summary.imported} products, "
        f"{summary.revisions_new} new revisions, {summary.errors} row errors"
    )
    return brand


def _step_plan(console: Console, state: CliState, brand: BrandConfig) -> None:
    settings = state.settings
    from catalog.planning import describe_shots, plan_shots
    from tasks.cli.catalog.plan_cmd import plan_table

    console.rule("3. plan shots")
    with state.session() as s:
        plan = plan_shots(s, brand, settings)
        planned = describe_shots(s, plan.shots)
    console.print(plan_table(plan, planned, limit=12, wide=console.width >= 120))
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _step_run(console: Console, settings: Settings) -> None:
    from tasks.runner import run_line

    console.rule("4. run: generate -> gate (tiny preset, in-process)")
    run = run_line(settings, brand="acme", progress=True)
    console.print(f"{run.total} shots in {run.elapsed_s:.1f}s: {run.counts}")


def _step_approve(console: Console, state: CliState) -> list[int]:
    """Approve every gated shot as the DEMO reviewer; returns the approved shot ids."""
    settings = state.settings
    from catalog.review import approve, list_shots, resolve_reviewer

    console.rule(f"5. DEMO auto-approval (reviewer {REVIEWER!r})")
    with state.session() as s:
        pending = [sh.id for sh in list_shots(s, brand="acme", status="pending_review")]
        rejected = [sh.id for sh in list_shots(s, brand="acme", status="rejected")]
        who = resolve_reviewer(s, REVIEWER, free_names=settings.review_free_names)
        if pending:
            approve(s, pending, who, note=DEMO_NOTE)
        if rejected:
            # Random-weight CLIP rejects noise at random; the demo overrides, and says so.
            approve(s, rejected, who, note=DEMO_NOTE + "; gate override", override=True)
    console.print(
        f"[yellow]DEMO[/]: auto-approved {len(pending)} pending and overrode {len(rejected)} "
        f"gate rejection(s) as reviewer {REVIEWER!r}. A real run needs a human reviewer."
    )
    return pending + rejected


def _step_publish(console: Console, state: CliState, shot_ids: list[int]) -> Asset | None:
    """Publish the approved shots; returns the first asset (None: nothing was published)."""
    settings = state.settings
    from catalog.status import all_assets, failed_shots
    from tasks.dispatch import enqueue_publish

    console.rule("6. publish to the local blob folder")
    enqueue_publish(shot_ids, settings)
    with state.session() as s:
        assets = all_assets(s)
        failed = failed_shots(s)
    console.print(f"{len(assets)} asset(s) under {settings.blob_root}")
    for sid, error in failed:
        console.print(f"[red]failed[/] shot {sid}: {error}", highlight=False)
    if not assets:
        console.print("[red]nothing was published[/]")
        return None
    return assets[0]


def _step_lineage(console: Console, state: CliState, asset: Asset) -> None:
    settings = state.settings
    from catalog.lineage import shot_lineage
    from tasks.cli.catalog.lineage_cmd import print_summary

    console.rule(f"7. lineage of asset {asset.id}")
    console.print(f"file: {Path(settings.blob_root) / asset.key}", highlight=False)
    with state.session() as s:
        chain = shot_lineage(s, asset.shot_id)
    assert chain is not None
    print_summary(chain)


def _step_sheet(console: Console, state: CliState) -> None:
    from tasks.cli.quality.review_cmd import write_contact_sheet

    console.rule("8. contact sheet")
    write_contact_sheet(state, SHEET_DIR, brand="acme", status="published")


def _step_export(console: Console) -> list[Path]:
    """The weekly loop's last step: the Shopify CSV and the Merchant Center feed, through the
    same commands a user runs (``shotline export shopify|gmc``)."""
    from typer.testing import CliRunner

    from tasks.cli import app

    console.rule("9. export: Shopify product CSV and Merchant Center feed")
    outs = [DEMO_DIR / "exports" / "shopify.csv", DEMO_DIR / "exports" / "gmc.tsv"]
    outs[0].parent.mkdir(parents=True, exist_ok=True)
    for channel, out in zip(("shopify", "gmc"), outs, strict=True):
        res = CliRunner().invoke(app, ["export", channel, "--brand", "acme", "--out", str(out)])
        console.print(res.output.rstrip(), markup=False, highlight=False)
        if res.exit_code != 0:
            raise SystemExit(res.exit_code)
    console.print(
        "URLs use SHOTLINE_PUBLIC_BASE_URL (set to an example CDN here); each names an "
        f"object under {DEMO_DIR / 'blobs'}",
        highlight=False,
    )
    return outs


def _shown(path: Path) -> str:
    """``path`` as the user can type it from the current folder (relative when inside it)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def look_around_commands(asset_id: int) -> list[str]:
    """CLI commands that read what the demo made: its state lives under ``SHOTLINE_VAR_DIR``
    (database, blobs), not in ./var where a plain ``shotline`` looks."""
    cli = f"SHOTLINE_VAR_DIR={_shown(DEMO_DIR)} {_shown(ROOT / '.venv' / 'bin' / 'shotline')}"
    return [
        f"{cli} review list --status published",
        f"{cli} lineage asset:{asset_id}",
        f"{cli} review sheet --status published --out {_shown(SHEET_DIR)}",
        f"{cli} status",
    ]


def _print_closing(console: Console, started: float, asset_id: int, exports: list[Path]) -> None:
    console.print(Panel(NOISE_WARNING, border_style="yellow"))
    console.print(
        f"demo finished in {time.monotonic() - started:.0f}s; everything is in {DEMO_DIR}"
    )
    for path in exports:
        console.print(f"export written: {_shown(path)}", highlight=False, markup=False)
    console.print("Look around in what it made:")
    for command in look_around_commands(asset_id):
        console.print(f"  {command}", highlight=False, markup=False, soft_wrap=True)


def main() -> int:
    started = time.monotonic()
    _configure_env()
    _fresh_demo_dir()
    from pipeline.settings import Settings
    from tasks.cli.common import CliState

    console = Console()
    console.print(Panel(NOISE_WARNING, title="shotline demo", border_style="yellow"))
    settings = Settings()
    assert settings.embedded, "the demo runs in-process"

    _step_database(console, settings)
    state = CliState(settings)  # one engine for every step
    try:
        brand = _step_import(console, state)
        _step_plan(console, state, brand)
        _step_run(console, settings)
        approved = _step_approve(console, state)
        asset = _step_publish(console, state, approved)
        if asset is None:
            return 1
        _step_lineage(console, state, asset)
        _step_sheet(console, state)
        exports = _step_export(console)
    finally:
        state.close()
    _print_closing(console, started, asset.id, exports)
    _print_review_web(console, settings)
    return 0


def _print_review_web(console: Console, settings: Settings) -> None:
    """How to review in the browser: a token for the demo reviewer, and the serve command."""
    from catalog.tokens import create_token
    from tasks.cli.common import CliState

    state = CliState(settings)
    try:
        with state.session() as s:
            _, token = create_token(s, REVIEWER, expires_days=1)
    finally:
        state.close()
    cli = f"SHOTLINE_VAR_DIR={_shown(DEMO_DIR)} {_shown(ROOT / '.venv' / 'bin' / 'shotline')}"
    console.print("Review in the browser (open http://127.0.0.1:8765/, log in with the token):")
    for line in (f"  {cli} review serve", f"  token (valid one day): {token}"):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
