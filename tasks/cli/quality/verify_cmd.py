"""``shotline verify IMAGE``: the watermark and provenance of any image, and its lineage."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import typer

from pipeline.settings import Settings
from tasks.cli.catalog import lineage_cmd
from tasks.cli.common import CliState, clean, cli_state, console, fail, print_json


def verify_report(
    data: bytes, trust_anchors_pem: str | None = None, keys: Any = None
) -> dict[str, Any]:
    """What ``shotline verify`` reports about one encoded image, as JSON-able data.

    Raises ``ValueError`` when ``data`` is not a readable image. Reusable by commands that add
    lineage for a known shot.
    """
    from pipeline.gate import watermark as wm
    from pipeline.gate.provenance import TRAINED_ALGORITHMIC_MEDIA
    from pipeline.gate.stage import verify_image

    res = verify_image(data, trust_anchors_pem=trust_anchors_pem, keys=keys or wm.NO_KEYS)
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
        # The key whose check code verified: an id, or "legacy" (unkeyed, forgeable).
        "watermark_key": res.key_id,
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
        report = verify_report(data, _trust_anchors(state.settings), _keys(state.settings))
    except ValueError as exc:
        fail(f"{clean(image)}: {exc}")
    # A verified watermark names a shot; show where it came from (CSV line to reviewer).
    lineage_cmd.attach_lineage(state, report)
    compare_with_record(state.settings, report, data)
    _attach_delivery(state, data, report)
    if as_json:
        print_json(report)
    else:
        _print_report(image, report)
        _print_delivery(report)
        lineage_cmd.print_lineage(report)
    if not report["verified"]:
        raise typer.Exit(1)


def _keys(settings: Settings) -> Any:
    from pipeline.gate.stage import watermark_keys
    from pipeline.gate.watermark import WatermarkError

    try:
        return watermark_keys(settings)
    except WatermarkError as exc:
        fail(f"SHOTLINE_WATERMARK_KEY: {exc}")


def _recorded_file(chain: dict[str, Any]) -> tuple[str, str, str] | None:
    """(what, sha256, blob key) of the file recorded for the shot: the published asset, else
    the finalized image; None when neither was recorded."""
    asset, mark = chain.get("asset"), chain.get("watermark")
    if asset and asset.get("sha256"):
        return f"asset {asset['id']}", str(asset["sha256"]), str(asset.get("key") or "")
    if mark and mark.get("image_sha256"):
        return "final image", str(mark["image_sha256"]), str(mark.get("image_key") or "")
    return None


def compare_with_record(settings: Settings, report: dict[str, Any], data: bytes) -> None:
    """``report["match"]``: how the file compares with what the catalog recorded for the shot
    its watermark names. A valid watermark says only which shot the pixels came from; the
    sha256 says whether this is that file (issue 31: never a bare "valid")."""
    import hashlib

    from pipeline.review.imagediff import pixel_difference
    from pipeline.storage import StorageError, make_blob_store

    report["match"] = None
    if not report.get("verified"):
        return
    chain = report.get("lineage")
    recorded = _recorded_file(chain) if chain else None
    match: dict[str, Any] = {"outcome": "unrecorded"}
    if chain and _legacy_but_recorded_keyed(report, chain):
        # The shot was stamped under a key; an unkeyed code for it is what a forger with the
        # source writes. The recorded payload's key id says which codes this shot can carry.
        report.update(verified=False, status="forged: unkeyed watermark on a keyed shot")
        match = {"outcome": "forged", "recorded_payload": chain["watermark"]["payload"]}
    elif recorded is not None:
        what, sha, key = recorded
        match = {"outcome": "exact" if hashlib.sha256(data).hexdigest() == sha else "differs"}
        match["recorded"] = what
        if match["outcome"] == "differs" and key:
            try:
                match["difference"] = pixel_difference(make_blob_store(settings).get(key), data)
            except (FileNotFoundError, StorageError, ValueError) as exc:
                match["note"] = f"the recorded file could not be read ({type(exc).__name__})"
    report["match"] = match


def _legacy_but_recorded_keyed(report: dict[str, Any], chain: dict[str, Any]) -> bool:
    from pipeline.gate.watermark import make_payload

    mark = chain.get("watermark") or {}
    payload = str(mark.get("payload") or "")
    if report.get("watermark_key") != "legacy" or len(payload) != 14:
        return False  # 14 hex digits: a payload this module wrote (older rows: not ours)
    return payload != make_payload(int(report["shot_id"])).hex()


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
