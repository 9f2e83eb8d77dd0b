"""``shotline verify`` (watermark + provenance of any image) and ``shotline calibrate``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import find_brand
from tasks.cli import lineage_cmd
from tasks.cli.app import app
from tasks.cli.common import console, fail, print_json, settings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean(value: Any) -> str:
    # Metadata comes from an untrusted file: no terminal control sequences reach the screen.
    return _CONTROL.sub("?", str(value))


def verify_report(data: bytes, trust_anchors_pem: str | None = None) -> dict[str, Any]:
    """What ``shotline verify`` reports about one encoded image, as JSON-able data.

    Raises ``ValueError`` when ``data`` is not a readable image. Reusable by commands that add
    lineage for a known shot.
    """
    from pipeline.gate.provenance import TRAINED_ALGORITHMIC_MEDIA
    from pipeline.gate.stage import verify_image

    res = verify_image(data, trust_anchors_pem=trust_anchors_pem)
    xmp_id = res.xmp.get("shotline:ShotId")
    xmp_shot = int(xmp_id) if isinstance(xmp_id, str) and xmp_id.isdigit() else None
    source_type = res.xmp.get("Iptc4xmpExt:DigitalSourceType")
    return {
        "shot_id": res.shot_id,
        "verified": res.verified,
        "status": "valid" if res.verified else "no valid watermark",
        "bit_accuracy": res.bit_accuracy,
        "watermark_method": res.method,
        "rescale": res.rescale,
        "xmp_shot_id": xmp_shot,
        "digital_source_type": source_type,
        "ai_generated_tag": source_type == TRAINED_ALGORITHMIC_MEDIA,
        # None when there is nothing to compare; False flags a file whose metadata was edited.
        "metadata_matches_watermark": (
            None if res.shot_id is None or xmp_shot is None else res.shot_id == xmp_shot
        ),
        "c2pa": res.c2pa,
        "xmp": res.xmp,
    }


def _read_image_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        fail(f"{path}: file not found")
    except IsADirectoryError:
        fail(f"{path}: is a directory, not an image")
    except OSError as exc:
        fail(f"{path}: unreadable: {exc.strerror or exc}")


def _trust_anchors() -> str | None:
    path = settings().c2pa_trust_anchors
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: C2PA trust anchors unreadable: {exc}")


@app.command("verify")
def verify(
    image: Path = typer.Argument(..., help="Image file (PNG, JPEG or WebP)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Decode the invisible watermark and read the provenance metadata of IMAGE.

    Exit 0 with a valid watermark, 1 without one, 2 when the file is missing or unreadable.
    """
    data = _read_image_file(image)
    try:
        report = verify_report(data, _trust_anchors())
    except ValueError as exc:
        fail(f"{image}: {exc}")
    # A verified watermark names a shot; show where it came from (CSV line to reviewer).
    lineage_cmd.attach_lineage(report)
    if as_json:
        print_json(report)
    else:
        _print_report(image, report)
        lineage_cmd.print_lineage(report)
    if not report["verified"]:
        raise typer.Exit(1)


def _print_report(path: Path, r: dict[str, Any]) -> None:
    if r["verified"]:
        line = f"{_clean(path)}: shot {r['shot_id']}: watermark valid"
        if r["rescale"] != 1.0:
            line += f" (found at {r['rescale']:.2f}x: the file was resized)"
    else:
        line = f"{_clean(path)}: no valid watermark"
        if r["bit_accuracy"]:
            line += f" (bit accuracy {100 * r['bit_accuracy']:.0f}% vs the XMP shot id)"
    console.print(line, markup=False, highlight=False)
    if r["xmp_shot_id"] is not None or r["digital_source_type"]:
        tag = "AI-generated tag present" if r["ai_generated_tag"] else "no AI-generated tag"
        console.print(f"  XMP: shot {r['xmp_shot_id']}, {tag}", markup=False, highlight=False)
    else:
        console.print("  XMP: none", markup=False, highlight=False)
    if r["metadata_matches_watermark"] is False:
        console.print("  warning: XMP shot id differs from the watermark", markup=False)
    c2pa = r["c2pa"]
    state = _clean(c2pa["validation_state"]) if c2pa else "none"
    console.print(f"  C2PA: {state}", markup=False, highlight=False)


def _load_images(folder: Path) -> list[Any]:
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            fail(f"{path}: not a readable image: {exc}")
    return images


@app.command("calibrate")
def calibrate(
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
    from pipeline.gate.calibration import calibrate as run_calibration
    from pipeline.gate.policy import GateError, GatePolicy
    from pipeline.gate.stage import load_gate

    cfg = settings()
    try:
        brand_cfg = find_brand(cfg.brands_dir, brand)
    except BrandConfigError as exc:
        fail(str(exc))
    for folder, label in ((positives, "--positives"), (negatives, "--negatives")):
        if not folder.is_dir():
            fail(f"{folder}: {label} must be a folder")
    concept_dirs = sorted(p for p in positives.iterdir() if p.is_dir())
    if not concept_dirs:
        fail(f"{positives}: expected one subfolder per concept, e.g. {positives}/nudity/*.png")
    pos = {d.name: _load_images(d) for d in concept_dirs}
    neg = _load_images(negatives)
    if not neg:
        fail(f"{negatives}: no images (.png, .jpg, .jpeg, .webp)")
    try:
        policy = GatePolicy.from_brand(brand_cfg)
        gate = load_gate(cfg)
        rows = run_calibration(gate.filter, policy, pos, neg, precision)
    except GateError as exc:
        fail(str(exc))
    if as_json:
        print_json(
            {
                "brand": brand,
                "policy_version": policy.version,
                "clip_model": gate.clip_model,
                "concepts": rows,
            }
        )
        return
    table = Table(title=f"{brand}: thresholds for {precision:.0%} precision ({gate.clip_model})")
    for col in ("concept", "kind", "pos", "neg", "current", "suggested", "precision", "recall"):
        table.add_column(col, justify="left" if col in ("concept", "kind") else "right")
    for r in rows:
        suggested = f"{r['threshold']:.4f}" if r["threshold"] is not None else "unreachable"
        table.add_row(
            _clean(r["concept"]),
            r["kind"],
            str(r["n_positives"]),
            str(r["n_negatives"]),
            f"{r['current_threshold']:.4f}",
            suggested,
            f"{r['precision']:.3f}" if r.get("precision") is not None else "-",
            f"{r['recall']:.3f}",
        )
    console.print(table)
