"""``shotline verify IMAGE``: the watermark and provenance of any image, and its lineage."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import typer

from pipeline.settings import Settings
from tasks.cli.catalog import lineage_cmd
from tasks.cli.common import CliState, clean, cli_state, console, fail, print_json


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


# Far above any product image; bounds memory whatever file (or object) is named.
MAX_IMAGE_BYTES = 256 << 20


def _read_image_file(path: Path) -> bytes:
    """The file's bytes; a FIFO, device or socket is refused before it is opened (reading
    one would block forever), and so is a file over ``MAX_IMAGE_BYTES``."""
    from pipeline.files import InputFileError, read_capped

    try:
        return read_capped(path, MAX_IMAGE_BYTES, "image")
    except InputFileError as exc:
        fail(f"{clean(path)}: {exc.reason.removeprefix('image: ')}")


def _read_s3_object(settings: Settings, uri: str) -> bytes:
    """``s3://bucket/key`` through boto3 (the configured endpoint), at most MAX_IMAGE_BYTES."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        fail(f"{clean(uri)}: an S3 image must be s3://bucket/key")
    endpoint = settings.s3_endpoint_url
    config = Config(
        region_name=settings.s3_region,
        s3={"addressing_style": "path"} if endpoint else {},
        connect_timeout=10,
        read_timeout=60,
    )
    try:
        client = boto3.client("s3", endpoint_url=endpoint, config=config)
        resp = client.get_object(Bucket=bucket, Key=key)
        size = int(resp.get("ContentLength") or 0)
        if size > MAX_IMAGE_BYTES:
            resp["Body"].close()
            fail(f"{clean(uri)}: object is {size} bytes; the limit is {MAX_IMAGE_BYTES}")
        data = bytes(resp["Body"].read(MAX_IMAGE_BYTES + 1))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        fail(f"{clean(uri)}: S3 error {code or exc}")
    except BotoCoreError as exc:
        fail(f"{clean(uri)}: S3 error: {exc}")
    if len(data) > MAX_IMAGE_BYTES:
        fail(f"{clean(uri)}: object is over the limit of {MAX_IMAGE_BYTES} bytes")
    return data


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
    image: str = typer.Argument(
        ..., help="Image file (PNG, JPEG or WebP), or s3://bucket/key on the configured endpoint."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Decode the invisible watermark and read the provenance metadata of IMAGE.

    Exit 0 with a valid watermark, 1 without one, 2 when the file is missing or unreadable.
    """
    state = cli_state(ctx)
    # Kept as text: a Path would fold "s3://bucket/key" into "s3:/bucket/key".
    if image.startswith("s3://"):
        data = _read_s3_object(state.settings, image)
    else:
        data = _read_image_file(Path(image))
    try:
        report = verify_report(data, _trust_anchors(state.settings))
    except ValueError as exc:
        fail(f"{clean(image)}: {exc}")
    # A verified watermark names a shot; show where it came from (CSV line to reviewer).
    lineage_cmd.attach_lineage(state, report)
    _attach_delivery(state, data, report)
    if as_json:
        print_json(report)
    else:
        _print_report(image, report)
        _print_delivery(report)
        lineage_cmd.print_lineage(report)
    if not report["verified"]:
        raise typer.Exit(1)


def _attach_delivery(state: CliState, data: bytes, report: dict[str, Any]) -> None:
    """Which rendition (channel, asset) these bytes are, and whether their asset was recalled
    (when, by whom, why). A catalog that cannot be read never fails ``verify``."""
    from catalog.db import SQLAlchemyError
    from catalog.delivery.lineage import file_facts

    try:
        with state.session() as s:
            report.update(file_facts(s, hashlib.sha256(data).hexdigest()))
    except SQLAlchemyError:
        report.update(rendition=None, asset_id=None, asset_status=None, recalled=None)


def _print_delivery(r: dict[str, Any]) -> None:
    rend = r.get("rendition")
    if rend:
        line = (
            f"  rendition: {rend['channel']}/{rend['name']} of asset {rend['asset_id']} "
            f"({rend['content_type']}, {rend['width']}x{rend['height']})"
        )
        console.print(line, markup=False, highlight=False)
    if r.get("asset_status"):
        console.print(f"  asset {r['asset_id']}: {r['asset_status']}", markup=False)
    rec = r.get("recalled")
    if rec:
        line = f"  RECALLED {rec['at']} by {rec['by']}: {rec['reason']}"
        console.print(line, markup=False, highlight=False)


def _print_report(path: str, r: dict[str, Any]) -> None:
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
