"""``shotline calibrate --brand NAME``: gate thresholds from labelled example images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from tasks.cli.common import clean, cli_state, console, fail, print_json

if TYPE_CHECKING:
    pass


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


# Calibration decodes every example into memory: bounded per folder (a few hundred labelled
# images per concept is plenty), each file by pipeline.images' byte and pixel caps.
MAX_IMAGES_PER_FOLDER = 2000


def _folder_entries(folder: Path, label: str) -> list[Path]:
    """The entries of a folder the user named, or one line and exit 2 (missing, not a folder,
    a name the OS refuses)."""
    try:
        if not folder.is_dir():
            fail(f"{folder}: {label} must be a folder")
        return sorted(folder.iterdir())
    except OSError as exc:
        fail(f"{folder}: {label}: {exc.strerror or exc}")


def _load_images(folder: Path, entries: list[Path]) -> list[Any]:
    """The example images among ``entries`` (the folder's listing), each read capped."""
    from pipeline.images import load_image_file

    paths = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if len(paths) > MAX_IMAGES_PER_FOLDER:
        fail(f"{folder}: {len(paths)} images; the limit is {MAX_IMAGES_PER_FOLDER} per folder")
    images = []
    for path in paths:
        try:  # capped read (regular files only) and bounded decode: a bomb is refused
            images.append(load_image_file(path))
        except ValueError as exc:  # InputFileError / ImageError, both naming the file
            fail(f"{path}: {exc}" if str(path) not in str(exc) else str(exc))
    return images


def _examples(positives: Path, negatives: Path) -> tuple[dict[str, list[Any]], list[Any]]:
    """The labelled images: one list per concept subfolder of POSITIVES, and the negatives."""
    concept_dirs = [p for p in _folder_entries(positives, "--positives") if p.is_dir()]
    negative_entries = _folder_entries(negatives, "--negatives")
    if not concept_dirs:
        fail(f"{positives}: expected one subfolder per concept, e.g. {positives}/nudity/*.png")
    pos = {d.name: _load_images(d, _folder_entries(d, "--positives")) for d in concept_dirs}
    neg = _load_images(negatives, negative_entries)
    if not neg:
        fail(f"{negatives}: no images (.png, .jpg, .jpeg, .webp)")
    return pos, neg


def _print_table(brand: str, precision: float, clip_model: str, rows: list[Any]) -> None:
    table = Table(
        title=f"{escape(brand)}: thresholds for {precision:.0%} precision ({escape(clip_model)})"
    )
    for col in ("concept", "kind", "pos", "neg", "current", "suggested", "precision", "recall"):
        table.add_column(col, justify="left" if col in ("concept", "kind") else "right")
    for r in rows:
        suggested = f"{r['threshold']:.4f}" if r["threshold"] is not None else "unreachable"
        table.add_row(
            clean(r["concept"]),
            r["kind"],
            str(r["n_positives"]),
            str(r["n_negatives"]),
            f"{r['current_threshold']:.4f}",
            suggested,
            f"{r['precision']:.3f}" if r.get("precision") is not None else "-",
            f"{r['recall']:.3f}",
        )
    console.print(table)


def calibrate(
    ctx: typer.Context,
    brand: str = typer.Option(..., "--brand", help="Brand whose gate policy to calibrate."),
    positives: Path = typer.Option(
        ..., "--positives", help="Folder with one subfolder of example images per concept."
    ),
    negatives: Path = typer.Option(..., "--negatives", help="Folder of clean example images."),
    precision: float = typer.Option(0.95, "--precision", min=0.01, max=1.0),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Per concept, the threshold that reaches PRECISION on labelled examples.

    POSITIVES/<concept>/ holds images that show the concept (a safety concept name or a
    competitor name); NEGATIVES holds clean images. Scores use the configured CLIP model.
    """
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import find_brand
    from pipeline.gate.calibration import calibrate as run_calibration
    from pipeline.gate.policy import GateError, GatePolicy
    from pipeline.gate.stage import load_gate

    settings = cli_state(ctx).settings
    try:
        brand_cfg = find_brand(settings.brands_dir, brand)
    except BrandConfigError as exc:
        fail(str(exc))
    pos, neg = _examples(positives, negatives)
    try:
        policy = GatePolicy.from_brand(brand_cfg)
        gate = load_gate(settings)
        rows = run_calibration(gate.filter, policy, pos, neg, precision)
    except GateError as exc:
        fail(str(exc))
    if as_json:
        data = {"brand": brand, "policy_version": policy.version, "clip_model": gate.clip_model}
        print_json({**data, "concepts": rows})
    else:
        _print_table(brand, precision, gate.clip_model, rows)
