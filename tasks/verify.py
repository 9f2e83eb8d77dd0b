"""What ``shotline verify`` and ``POST /api/verify`` report about one encoded image: the
watermark and provenance (``verify_report``), the lineage of the shot a *verified* watermark
names, how the file compares with what the catalog recorded, and which rendition it is.

One function for both fronts (``file_report``), so the CLI's ``--json`` and the API's answer
are the same document. Errors are exceptions carrying one line; each front says them its way.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from catalog.db import Session, SQLAlchemyError
from pipeline.settings import Settings


class CatalogAccess(Protocol):
    """What a front shares with this module: its settings and a transaction (``CliState``,
    ``WebState``)."""

    settings: Settings

    def session(self) -> AbstractContextManager[Session]: ...


class VerifySetupError(Exception):
    """The deployment cannot verify (trust anchors unreadable, a bad watermark key): one line.
    Not a ``ValueError``, which means the file is not a readable image."""


def verify_report(
    data: bytes, trust_anchors_pem: str | None = None, keys: Any = None
) -> dict[str, Any]:
    """What ``shotline verify`` reports about one encoded image, as JSON-able data.

    Raises ``ValueError`` when ``data`` is not a readable image (decoded with the bounded
    decoder, ``pipeline.images``). Reusable by commands that add lineage for a known shot.
    """
    from pipeline.gate import watermark as wm
    from pipeline.gate.provenance import TRAINED_ALGORITHMIC_MEDIA
    from pipeline.gate.stage import verify_image

    res = verify_image(data, trust_anchors_pem=trust_anchors_pem, keys=keys or wm.NO_KEYS)
    xmp_id = res.xmp.get("shotline:ShotId")
    xmp_shot = (
        int(xmp_id) if isinstance(xmp_id, str) and xmp_id.isascii() and xmp_id.isdigit() else None
    )
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


def trust_anchors(settings: Settings) -> str | None:
    """The C2PA trust anchors' PEM text, or None when none are configured."""
    path = settings.c2pa_trust_anchors
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VerifySetupError(f"{path}: C2PA trust anchors unreadable: {exc}") from None


def watermark_keys(settings: Settings) -> Any:
    from pipeline.gate.stage import watermark_keys as keys_of
    from pipeline.gate.watermark import WatermarkError

    try:
        return keys_of(settings)
    except WatermarkError as exc:
        raise VerifySetupError(f"SHOTLINE_WATERMARK_KEY: {exc}") from None


def attach_lineage(access: CatalogAccess, report: dict[str, Any]) -> dict[str, Any]:
    """Add ``lineage`` (the chain, or None) to a verify report.

    Only a *verified* watermark id is looked up: XMP is plain metadata anyone can edit. A
    database that cannot be reached never fails ``verify``; ``lineage_note`` says why.
    """
    from catalog.lineage import shot_lineage

    shot_id = report.get("shot_id") if report.get("verified") else None
    chain, note = None, None
    if shot_id is not None:
        try:
            with access.session() as s:
                chain = shot_lineage(s, int(shot_id))
        except SQLAlchemyError as exc:
            note = f"lineage unavailable: the catalog database failed ({type(exc).__name__})"
        if chain is None and note is None:
            note = f"shot {shot_id} is not in this catalog"
    report["lineage"] = chain
    if note is not None:
        report["lineage_note"] = note
    return report


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


def attach_delivery(access: CatalogAccess, data: bytes, report: dict[str, Any]) -> None:
    """Which rendition (channel, asset) these bytes are, and whether their asset was recalled
    (when, by whom, why). A catalog that cannot be read never fails ``verify``."""
    from catalog.delivery.lineage import file_facts

    try:
        with access.session() as s:
            report.update(file_facts(s, hashlib.sha256(data).hexdigest()))
    except SQLAlchemyError:
        report.update(rendition=None, asset_id=None, asset_status=None, recalled=None)


def file_report(access: CatalogAccess, data: bytes) -> dict[str, Any]:
    """Everything ``verify`` says about ``data``: the watermark and provenance, the lineage
    of the shot it names, the comparison with the recorded file, the rendition it is.

    Raises ``VerifySetupError`` (the deployment's keys or anchors) before ``ValueError``
    (``data`` is not a readable image, or over the decoder's pixel cap)."""
    anchors = trust_anchors(access.settings)
    keys = watermark_keys(access.settings)
    report = verify_report(data, anchors, keys)
    attach_lineage(access, report)
    compare_with_record(access.settings, report, data)
    attach_delivery(access, data, report)
    return report
