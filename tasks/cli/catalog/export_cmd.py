"""``shotline export shopify|gmc``: the current assets of a brand as a Shopify product CSV
or a Merchant Center supplemental feed (TSV or XML), streamed, written whole or not at all.

Bad input (no public base URL, an unknown brand or channel, an output path that is a folder,
a FIFO or unwritable, an alt text that fails to render) is one line and exit 2, and leaves
any earlier file at that path as it was.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer

from tasks.cli.common import MAX_ID, CliState, cli_state, console, err_console, fail, print_json

if TYPE_CHECKING:
    from pipeline.brand.config import BrandConfig, ChannelSpec
    from pipeline.delivery.feeds import FeedStats


export_app = typer.Typer(
    help="Export current assets: Shopify product CSV, Merchant Center feed.",
    no_args_is_help=True,
)

Kind = Literal["csv", "tsv", "xml"]  # catalog.delivery.feed_files.FeedFormat
BRAND = typer.Option(..., "--brand", help="Brand name (its YAML names the channel).")
SINCE = typer.Option(
    None, "--since", help="Only assets published at or after this time (ISO 8601)."
)
RUN = typer.Option(
    None, "--import-run", min=1, max=MAX_ID, help="Only products of this import run."
)
JSON = typer.Option(False, "--json", help="Print the summary as JSON.")
STORE = typer.Option(
    False,
    "--to-store",
    help="Also put the file in the blob store at feeds/BRAND/CHANNEL.EXT (a stable key).",
)


def _channel(state: CliState, brand: str, channel: str) -> tuple[BrandConfig, ChannelSpec]:
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import find_brand

    try:
        cfg = find_brand(state.settings.brands_dir, brand)
    except BrandConfigError as exc:
        fail(exc.lines()[0] if exc.lines() else str(exc))
    spec = (cfg.channels or {}).get(channel)
    if spec is None:
        known = ", ".join(sorted(cfg.channels or {})) or "none"
        fail(f"brand {brand!r} has no channels.{channel} in its YAML (channels: {known})")
    return cfg, spec


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r}: not an ISO 8601 date or time (e.g. 2026-12-01T00:00)")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # naive: UTC


def _export(
    ctx: typer.Context,
    kind: Kind,
    brand: str,
    channel: str,
    out: Path,
    since: str | None,
    import_run: int | None,
    as_json: bool,
    to_store: bool,
) -> None:
    from catalog.delivery.exports import brand_id_of, missing_renditions
    from catalog.delivery.feed_files import write_export
    from pipeline.delivery.alt_text import AltTextError
    from pipeline.delivery.feeds import Exporter, FeedError
    from pipeline.delivery.outfile import OutputPathError, check_output_path
    from pipeline.delivery.urls import PublicUrlError, check_base_url

    state = cli_state(ctx)
    try:
        base = check_base_url(state.settings.public_base_url)
        check_output_path(out)
    except (PublicUrlError, OutputPathError) as exc:
        fail(str(exc))
    cfg, spec = _channel(state, brand, channel)
    when, rendition = _since(since), spec.feed_rendition().name
    try:
        exporter = Exporter(cfg, channel, spec, base)
    except AltTextError as exc:
        fail(f"channels.{channel}: {exc}")
    with state.session() as s:
        bid = brand_id_of(s, brand)
        if bid is None:
            fail(f"brand {brand!r} has no rows in this catalog (import and plan it first)")
        try:
            stats = write_export(s, exporter, bid, kind, out, since=when, import_run=import_run)
        except (FeedError, OutputPathError) as exc:
            fail(str(exc))
        missing = missing_renditions(s, bid, channel, rendition, since=when, import_run=import_run)
    stored = _to_store(state, out, brand, channel) if to_store else None
    _report(out, brand, channel, stats, missing, stored, as_json)


def _to_store(state: CliState, out: Path, brand: str, channel: str) -> str:
    from pipeline.storage import StorageError, make_blob_store

    ext = out.suffix.lstrip(".") or "txt"
    key = f"feeds/{brand}/{channel}.{ext}"
    ctype = {"csv": "text/csv", "tsv": "text/tab-separated-values", "xml": "application/xml"}
    try:
        make_blob_store(state.settings).put(key, out.read_bytes(), ctype.get(ext, "text/plain"))
    except StorageError as exc:
        fail(f"{key}: the file was written to {out} but not to the blob store: {exc}")
    return key


def _report(
    out: Path,
    brand: str,
    channel: str,
    stats: FeedStats,
    missing: int,
    stored: str | None,
    as_json: bool,
) -> None:
    data: dict[str, Any] = {**asdict(stats), "out": str(out), "channel": channel}
    data.pop("urls", None)
    data.update(missing_rendition=missing, store_key=stored)
    if as_json:
        print_json(data)
        return
    console.print(
        f"wrote {stats.images} image(s) of {stats.products} product(s) to {out}",
        markup=False,
        highlight=False,
    )
    if stored:
        console.print(f"  and to the blob store at {stored}", markup=False, highlight=False)
    if missing:
        err_console.print(
            f"warning: {missing} current asset(s) have no {channel} rendition (published "
            "before the channel was configured); they are not in this file: run "
            f"`shotline renditions backfill --brand {brand}`",
            markup=False,
            highlight=False,
        )


@export_app.command("shopify")
def shopify(
    ctx: typer.Context,
    brand: str = BRAND,
    out: Path = typer.Option(..., "--out", help="The CSV file to write."),
    channel: str = typer.Option("shopify", "--channel", help="The brand's channel to use."),
    since: str | None = SINCE,
    import_run: int | None = RUN,
    as_json: bool = JSON,
    to_store: bool = STORE,
) -> None:
    """A Shopify product CSV that adds the current images to existing products."""
    _export(ctx, "csv", brand, channel, out, since, import_run, as_json, to_store)


@export_app.command("gmc")
def gmc(
    ctx: typer.Context,
    brand: str = BRAND,
    out: Path = typer.Option(..., "--out", help="FILE.tsv (or .txt) or FILE.xml."),
    channel: str = typer.Option("gmc", "--channel", help="The brand's channel to use."),
    since: str | None = SINCE,
    import_run: int | None = RUN,
    as_json: bool = JSON,
    to_store: bool = STORE,
) -> None:
    """A Merchant Center supplemental feed keyed by offer id (TSV or RSS 2.0 XML)."""
    suffix = out.suffix.lower()
    if suffix not in (".tsv", ".txt", ".xml"):
        fail(f"{out}: the feed file must end in .tsv, .txt or .xml")
    kind: Kind = "xml" if suffix == ".xml" else "tsv"
    _export(ctx, kind, brand, channel, out, since, import_run, as_json, to_store)
