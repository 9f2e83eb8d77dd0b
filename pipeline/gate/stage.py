"""The gate stage facade: CLIP filter decisions, then watermark + provenance on the final file.

``load_gate(settings)`` builds the CLIP encoder once; the Celery gate task keeps the ClipGate and
calls ``check`` on batches and ``finalize`` per approved-for-review image. ``verify_image``
needs no model: it decodes the watermark and reads the metadata of any file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from pipeline.gate import nsfw
from pipeline.gate import watermark as wm
from pipeline.gate.clip import ImageTextEncoder, load_clip_encoder
from pipeline.gate.policy import (
    GateError,
    GateModelError,
    GatePolicy,
    open_nsfw_check,
    with_checks,
)
from pipeline.gate.provenance import (
    FORMATS,
    C2paSigner,
    build_xmp,
    encode_image,
    normalize_format,
    read_c2pa,
    read_xmp,
    sign_c2pa,
)
from pipeline.gate.scores import ClipFilter
from pipeline.images import DEFAULT_MAX_PIXELS, decode_image, opened_image
from pipeline.types import FilterDecision, FinalImage, GateItem, KeepPixels, ProvenanceInfo

if TYPE_CHECKING:
    from pipeline.brand.config import BrandConfig
    from pipeline.settings import Settings

__all__ = [
    "ClipGate",
    "FilterDecision",
    "FinalImage",
    "GateError",
    "GateItem",
    "GatePolicy",
    "ProvenanceInfo",
    "VerifyResult",
    "load_gate",
    "verify_image",
]

XMP_WATERMARK_KEY = "shotline:Watermark"


@dataclass(frozen=True)
class VerifyResult:
    shot_id: int | None  # from the watermark, only when its check code verified
    verified: bool
    bit_accuracy: float  # vs the verified id, else vs the XMP shot id, else 0.0
    xmp: dict[str, Any]
    method: str | None = None  # watermark config label that verified (else the first tried)
    rescale: float = 1.0  # scale factor of the attempt that verified
    c2pa: dict[str, Any] | None = None  # validation state + active manifest label
    key_id: int | str | None = None  # the watermark key that verified (wm.LEGACY: unkeyed)


@dataclass
class ClipGate:
    filter: ClipFilter
    watermark: wm.WatermarkConfig = field(default_factory=wm.WatermarkConfig)
    keys: wm.WatermarkKeys = wm.NO_KEYS  # SHOTLINE_WATERMARK_KEY: keys the check code
    signer: C2paSigner | None = None
    default_format: str = "png"
    model_dir: Path | None = None  # where ``shotline gate install-nsfw`` put Open-NSFW
    device: str = "auto"  # cpu: onnxruntime's CPU provider even where CUDA is there
    _nsfw: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def clip_model(self) -> str:
        return self.filter.clip_model

    @property
    def image_encoder(self) -> Any:
        """CLIP's image tower (``encode_images``), for the packshot fidelity similarity."""
        return self.filter.encoder

    def policy_for(self, brand: BrandConfig) -> GatePolicy:
        """The brand's policy; ``check`` takes it back (embeddings are cached per version).
        Refuses (``GateModelError``) a brand that asks for Open-NSFW when it isn't installed."""
        policy = GatePolicy.from_brand(brand)
        if policy.open_nsfw_threshold is not None:
            self.nsfw_session()
        return policy

    def nsfw_session(self) -> Any:
        """The Open-NSFW session, loaded on first use (only brands that ask for it pay)."""
        if self._nsfw is None:
            path = nsfw.installed(nsfw.OPEN_NSFW, self.model_dir) if self.model_dir else None
            if path is None:
                where = self.model_dir or "the model cache"
                raise GateModelError(
                    f"the brand asks for open_nsfw but it is not installed in {where}: "
                    f"{nsfw.INSTALL_HINT}"
                )
            self._nsfw = nsfw.load_session(path, self.device)
        return self._nsfw

    def check(self, items: Sequence[GateItem], policy: GatePolicy) -> list[FilterDecision]:
        """One decision per item, in order. Policy embeddings are cached across calls. With
        ``open_nsfw`` in the policy, each image's Open-NSFW score joins its decision."""
        decisions = self.filter.check(items, policy)
        threshold = policy.open_nsfw_threshold
        if threshold is None or not items:
            return decisions
        scores = nsfw.nsfw_scores(self.nsfw_session(), [it.image for it in items])
        out = []
        for decision, score in zip(decisions, scores, strict=True):
            out.append(with_checks(decision, *open_nsfw_check(score, threshold)))
        return out

    def _verify(self, data: bytes, shot_id: int, pixels: int) -> tuple[bool, float]:
        """Decode the encoded file again: does its watermark name ``shot_id``?"""
        # Our own encoding of an image already in memory: no pixel cap beyond its size.
        own = decode_image(data, "encoded output", max_pixels=max(1, pixels))
        decoded = wm.decode(own, self.watermark, rescale=(), keys=self.keys)
        return decoded.shot_id == shot_id, wm.bit_accuracy(decoded.bits, shot_id, self.keys)

    def finalize(
        self,
        shot_id: int,
        image: Image.Image,
        provenance: ProvenanceInfo,
        fmt: str | None = None,
        keep: KeepPixels | None = None,
    ) -> FinalImage:
        """Watermark the pixels -> restore ``keep`` (a packshot's product core: the mark
        lives in the generated scene only; a white_background slot's pure-white pixels) ->
        encode with XMP -> decode again to verify -> C2PA sign. A white_background shot
        whose mark does not verify once its white is restored is published unmarked, with
        ``method`` ``wm.OMITTED_WHITE`` (never silently: XMP and lineage say so).

        Signing is last because any later byte change breaks the credential.
        """
        if provenance.shot_id != shot_id:
            # The watermark and the XMP would name different shots: a caller bug, not data.
            raise GateError(f"provenance is for shot {provenance.shot_id}, not shot {shot_id}")
        fmt = normalize_format(fmt or self.default_format)
        content_type, ext = FORMATS[fmt]
        marked = wm.embed(image, shot_id, self.watermark, self.keys)
        if keep is not None and marked.embedded:
            marked = replace(marked, image=restore_pixels(marked.image, keep, image))
        extra = {"Watermark": marked.method}
        if keep is not None and keep.white and marked.embedded:
            extra["WatermarkKeep"] = "white"  # renditions keep the white too
        data = encode_image(marked.image, fmt, build_xmp(provenance, extra=extra))
        verified, accuracy = False, 0.0
        if marked.embedded:
            verified, accuracy = self._verify(data, shot_id, image.width * image.height)
            if not verified and keep is not None and keep.white:
                # The product alone is too small to carry the mark: publish the image unmarked
                # rather than break its pure-white background, and say so where the watermark
                # would be (XMP, watermarks.method, lineage). The XMP keeps the AI tag.
                plain = restore_pixels(image, replace(keep, white=False))  # the product core
                marked = replace(marked, image=plain, method=wm.OMITTED_WHITE)
                xmp = build_xmp(provenance, extra={"Watermark": wm.OMITTED_WHITE})
                data, accuracy = encode_image(marked.image, fmt, xmp), 0.0
        signed = False
        if self.signer is not None:
            data = sign_c2pa(data, content_type, provenance, self.signer)
            signed = True
        return FinalImage(
            data=data,
            content_type=content_type,
            ext=ext,
            sha256=hashlib.sha256(data).hexdigest(),
            payload=marked.payload,
            method=marked.method,
            verified=verified,
            bit_accuracy=accuracy,
            c2pa_signed=signed,
        )


def restore_pixels(
    image: Image.Image, keep: KeepPixels, original: Image.Image | None = None
) -> Image.Image:
    """``image`` with ``keep.rgb`` put back where ``keep.mask`` is set, and, with
    ``keep.white``, RGB 255 wherever ``original`` (the unmarked image) was pure white."""
    arr = np.array(image.convert("RGB"), dtype=np.uint8)
    if keep.rgb is not None and keep.mask is not None:
        if arr.shape != keep.rgb.shape or keep.mask.shape != arr.shape[:2]:
            raise GateError(
                f"the pixels to keep are {keep.rgb.shape[1]}x{keep.rgb.shape[0]}, the image "
                f"{arr.shape[1]}x{arr.shape[0]}"
            )
        # cv2's masked copy: about 5x numpy's ``copyto(where=)`` at 2048².
        mask = np.ascontiguousarray(keep.mask).astype(np.uint8, copy=False)
        cv2.copyTo(np.ascontiguousarray(keep.rgb, dtype=np.uint8), mask, arr)
    if keep.white and original is not None:
        arr[wm.white_mask(original)] = 255
    return Image.fromarray(arr, "RGB")


def load_gate(settings: Settings, encoder: ImageTextEncoder | None = None) -> ClipGate:
    """Build the gate once per worker: CLIP (or an injected encoder), watermark, signer."""
    try:
        config = wm.WatermarkConfig(
            method=settings.watermark_method,
            strength=settings.watermark_scale,
            headroom=settings.watermark_headroom,
        )
        keys = watermark_keys(settings)
    except wm.WatermarkError as exc:
        raise GateError(str(exc)) from None
    signer = None
    if settings.c2pa_cert or settings.c2pa_key:
        if not (settings.c2pa_cert and settings.c2pa_key):
            raise GateError("C2PA signing needs both SHOTLINE_C2PA_CERT and SHOTLINE_C2PA_KEY")
        signer = C2paSigner.from_files(settings.c2pa_cert, settings.c2pa_key)
    return ClipGate(
        filter=ClipFilter(
            encoder or load_clip_encoder(settings), crop_grid=settings.clip_crop_grid
        ),
        watermark=config,
        keys=keys,
        signer=signer,
        default_format=settings.output_format,
        model_dir=settings.model_cache_dir,
        device=settings.device,
    )


def watermark_keys(settings: Settings) -> wm.WatermarkKeys:
    """The check-code keys from ``SHOTLINE_WATERMARK_KEY`` / ``_OLD_KEYS`` / ``_LEGACY``."""
    current = settings.watermark_key.get_secret_value() if settings.watermark_key else None
    old = [k.get_secret_value() for k in settings.watermark_old_keys]
    return wm.WatermarkKeys.parse(current, old, settings.watermark_legacy)


def _candidate_configs(
    xmp: dict[str, Any], configs: Sequence[wm.WatermarkConfig]
) -> list[wm.WatermarkConfig]:
    out = list(configs)
    label = xmp.get(XMP_WATERMARK_KEY)
    if isinstance(label, str):
        declared = wm.WatermarkConfig.from_label(label)
        if declared is not None:
            # The file says how it was marked: try that first. It is only a hint (the file is
            # untrusted): the check code still decides.
            out = [declared] + [c for c in out if c != declared]
    return out


def verify_image(
    data: bytes,
    configs: Sequence[wm.WatermarkConfig] | None = None,
    trust_anchors_pem: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    keys: wm.WatermarkKeys = wm.NO_KEYS,
) -> VerifyResult:
    """Decode the watermark and read XMP/C2PA from an encoded image.

    ``configs`` are the watermark settings to try (default: ours); a config named in the
    file's XMP is tried first. ``trust_anchors_pem`` lets C2PA report "Trusted".

    Raises ``ValueError`` (``ImageError``) when ``data`` is not a readable image or has more
    than ``max_pixels`` pixels (checked from its header, before decoding).
    """
    with opened_image(data, None, max_pixels) as im:
        fmt = (im.format or "").lower()
    image = decode_image(data, None, max_pixels)
    xmp = read_xmp(data)
    candidates = _candidate_configs(xmp, configs or [wm.WatermarkConfig()])
    used = candidates[0]
    result = wm.decode(image, used, keys=keys)
    for config in candidates[1:]:
        if result.verified:
            break
        attempt = wm.decode(image, config, keys=keys)
        if attempt.verified:
            used, result = config, attempt
    xmp_id = _int_or_none(xmp.get("shotline:ShotId"))
    expected = result.shot_id if result.verified else xmp_id
    wrote = keys.writing(result.key_id if result.verified else keys.current)
    accuracy = wm.bit_accuracy(result.bits, expected, wrote) if expected is not None else 0.0
    content_type = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}.get(fmt)
    c2pa = None
    if content_type:
        store = read_c2pa(data, content_type, trust_anchors_pem)
        if store is not None:
            c2pa = {
                "validation_state": store["validation_state"],
                "active_manifest": store["active_manifest"],
            }
    return VerifyResult(
        shot_id=result.shot_id,
        verified=result.verified,
        bit_accuracy=accuracy,
        xmp=xmp,
        method=used.label,
        rescale=result.scale,
        c2pa=c2pa,
        key_id=result.key_id,
    )


def _int_or_none(value: Any) -> int | None:
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return None
    return n if 0 <= n < 2**32 else None
