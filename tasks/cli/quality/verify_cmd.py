"""``shotline verify IMAGE``: the watermark and provenance of any image, and its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pipeline.settings import Settings
from tasks.cli.catalog import lineage_cmd
from tasks.cli.common import clean, cli_state, console, fail, print_json


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


def _trust_anchors(settings: Settings) -> str | None:
    path = settings.c2pa_trust_anchors
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: C2PA trust anchors unreadable: {exc}")


def verify(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="Image file (PNG, JPEG or WebP)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Decode the invisible watermark and read the provenance metadata of IMAGE.

    Exit 0 with a valid watermark, 1 without one, 2 when the file is missing or unreadable.
    """
    state = cli_state(ctx)
    data = _read_image_file(image)
    try:
        report = verify_report(data, _trust_anchors(state.settings))
    except ValueError as exc:
        fail(f"{image}: {exc}")
    # A verified watermark names a shot; show where it came from (CSV line to reviewer).
    lineage_cmd.attach_lineage(state, report)
    if as_json:
        print_json(report)
    else:
        _print_report(image, report)
        lineage_cmd.print_lineage(report)
    if not report["verified"]:
        raise typer.Exit(1)


def _print_report(path: Path, r: dict[str, Any]) -> None:
    if r["verified"]:
        line = f"{clean(path)}: shot {r['shot_id']}: watermark valid"
        if r["rescale"] != 1.0:
            line += f" (found at {r['rescale']:.2f}x: the file was resized)"
    else:
        line = f"{clean(path)}: no valid watermark"
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
    state = clean(c2pa["validation_state"]) if c2pa else "none"
    console.print(f"  C2PA: {state}", markup=False, highlight=False)
