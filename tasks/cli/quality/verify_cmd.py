"""``shotline verify IMAGE``: the watermark and provenance of any image, and its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tasks.cli.catalog import lineage_cmd
from tasks.cli.common import clean, cli_state, console, fail, print_json

if TYPE_CHECKING:
    from pipeline.settings import Settings


def __getattr__(name: str) -> Any:
    """``verify_report`` and ``compare_with_record`` stay importable from here (they were
    re-exported), loaded on first use: ``tasks.verify`` imports the database layer."""
    if name in ("verify_report", "compare_with_record"):
        import tasks.verify

        return getattr(tasks.verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from botocore.exceptions import BotoCoreError, ClientError

    from pipeline.s3 import s3_client

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        fail(f"{clean(uri)}: an S3 image must be s3://bucket/key")
    try:
        client = s3_client(settings.s3_endpoint_url, settings.s3_region)
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
    from tasks.verify import VerifySetupError, file_report

    state = cli_state(ctx)
    # Kept as text: a Path would fold "s3://bucket/key" into "s3:/bucket/key".
    if image.startswith("s3://"):
        data = _read_s3_object(state.settings, image)
    else:
        data = _read_image_file(Path(image))
    # The watermark, and for the shot it names: lineage (CSV line to reviewer), the
    # recorded file compared, the rendition (``tasks.verify``, shared with POST /api/verify).
    try:
        report = file_report(state, data)
    except VerifySetupError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"{clean(image)}: {exc}")
    if as_json:
        print_json(report)
    else:
        _print_report(image, report)
        _print_delivery(report)
        lineage_cmd.print_lineage(report)
    if not report["verified"]:
        raise typer.Exit(1)


def _how_different(diff: dict[str, Any] | None) -> str:
    if not diff:
        return "an unknown amount (the recorded file is unavailable)"
    if not diff["same_size"]:
        (w, h), (rw, rh) = diff["reproduced_size"], diff["recorded_size"]
        return f"size: {w}x{h} against {rw}x{rh} (resized or cropped)"
    psnr = diff["psnr_db"]
    return (
        f"{diff['mean_abs']:.2f} levels on average (max {diff['max_abs']}, "
        f"{100 * diff['changed_fraction']:.0f}% of pixels changed"
        + (f", PSNR {psnr:.1f} dB)" if psnr is not None else ")")
        + " (re-encoded or edited)"
    )


def identity_line(path: str, r: dict[str, Any]) -> str:
    """The first line of ``verify``: what the file is, as far as the record can say."""
    shot = r["shot_id"]
    kid = r.get("watermark_key")
    key = "unkeyed legacy watermark, forgeable" if kid == "legacy" else f"key {kid}"
    match = r.get("match") or {"outcome": "unrecorded"}
    if match["outcome"] == "exact":
        what = str(match["recorded"])
        if what.startswith("asset "):
            return f"{clean(path)}: this is {what} (shot {shot}), byte for byte ({key})"
        return f"{clean(path)}: this is shot {shot}'s {what}, byte for byte, unpublished ({key})"
    if match["outcome"] == "differs":
        published = "published file" if str(match["recorded"]).startswith("asset") else "final"
        return (
            f"{clean(path)}: the watermark says shot {shot} ({key}); the pixels differ from "
            f"the {published} by {_how_different(match.get('difference'))}"
        )
    why = "it is not in this catalog" if not r.get("lineage") else "no file was recorded for it"
    return (
        f"{clean(path)}: shot {shot}: watermark valid ({key}), but {why}: "
        "nothing to compare the file with"
    )


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
    if (r.get("match") or {}).get("outcome") == "forged":
        line = (
            f"{clean(path)}: forged watermark: it names shot {r['shot_id']} with the unkeyed "
            "legacy code, but that shot was stamped under a deployment key"
        )
    elif r["verified"]:
        line = identity_line(path, r)
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
