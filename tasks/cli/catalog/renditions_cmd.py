"""``shotline renditions backfill --brand B [--channel C] [--json]``: the delivery files of
current assets published before their brand configured a channel (the ones ``export`` warns
it left out), made from each asset's published master as publish makes them.

The brand's YAML is read as ``export`` reads it and its config stored on the brand row (as an
import or plan does), so the next publications take the same channels. An unknown brand or
channel is one line and exit 2; a rendition that cannot be made is listed with its reason
and the run exits 1 after making all the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from tasks.cli.common import cli_state, console, err_console, fail, print_json

if TYPE_CHECKING:
    from tasks.cli.common import CliState
    from tasks.line.renditions import Wanted

renditions_app = typer.Typer(help="Delivery renditions of published assets.", no_args_is_help=True)


def _wanted(state: CliState, brand: str, channel: str | None) -> tuple[int, Wanted]:
    """The brand's id and the (channel, rendition) pairs its config asks for now."""
    from catalog.brands import upsert_brand
    from catalog.delivery.exports import brand_id_of
    from catalog.shots import stored_brand_configs
    from pipeline.brand.config import BrandConfigError
    from pipeline.delivery.renditions import channel_renditions
    from tasks.context import context_for

    with state.session() as s:
        stored = stored_brand_configs(s, [brand]).get(brand)
        try:
            cfg = context_for(state.settings).brand_config(brand, stored, fresh=True)
        except BrandConfigError as exc:
            fail(exc.lines()[0] if exc.lines() else str(exc))
        bid = brand_id_of(s, brand)
        if bid is None:
            fail(f"brand {brand!r} has no rows in this catalog (import and plan it first)")
        upsert_brand(s, cfg)  # what publish reads from now on
        channels = stored_brand_configs(s, [brand])[brand].get("channels") or {}
    if channel is not None and channel not in channels:
        known = ", ".join(sorted(channels)) or "none"
        fail(f"brand {brand!r} has no channels.{channel} in its YAML (channels: {known})")
    wanted = channel_renditions(channels)
    return bid, [(c, spec) for c, spec in wanted if channel in (None, c)]


@renditions_app.command("backfill")
def backfill_command(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="Brand name (its YAML names the channels)."),
    channel: str | None = typer.Option(
        None, "--channel", help="Only this channel's renditions (default: every channel)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Make the renditions current assets lack because they were published before their
    brand configured the channel: from each asset's published master, stored and recorded
    as publish does. Run again, it makes nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tasks.context import context_for
    from tasks.delivery.backfill import backfill

    state = cli_state(ctx)
    bid, wanted = _wanted(state, brand, channel)
    bar = Progress(
        TextColumn("backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    with bar:
        task = bar.add_task("backfill", total=None)
        result = backfill(
            context_for(state.settings),
            bid,
            wanted,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    summary: dict[str, Any] = {
        "brand": brand,
        "renditions_wanted": [f"{c}/{spec.name}" for c, spec in wanted],
        **result.to_json(),
    }
    if as_json:
        print_json(summary)
    else:
        _print(summary)
    if result.failures:
        raise typer.Exit(1)


def _print(summary: dict[str, Any]) -> None:
    for f in summary["failures"]:
        err_console.print(
            f"failed: asset {f['asset_id']} (shot {f['shot_id']}) {f['rendition']}: {f['reason']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"backfilled {summary['assets']} asset(s) of {summary['checked']} current: "
        f"{summary['renditions']} rendition(s) made, {len(summary['failures'])} failure(s)",
        markup=False,
        highlight=False,
    )
