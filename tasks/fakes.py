"""Stand-in stages for exercising the control plane alone (tests, the orchestration benchmark).

Select them with ``SHOTLINE_GENERATOR_FACTORY=tasks.fakes:fixed_image_generator`` and
``SHOTLINE_GATE_FACTORY=tasks.fakes:pass_through_gate``. They honour the stage contracts
(``Generator.generate`` and ``Gate.check/finalize``) but do no model work, so what is measured
is queues, workers, the database and the blob store. Their images are flat test patterns,
never product photos.

Knobs (environment, read by the worker that builds the fake):
``SHOTLINE_FAKE_GENERATE_DELAY_S`` sleeps per batch (lets a test kill a worker mid-batch);
``SHOTLINE_FAKE_IMAGE_SIZE`` sets the image side (default 64, the tiny preset's);
``SHOTLINE_FAKE_FINALIZE_DELAY_S`` sleeps in each ``finalize`` (a kill lands mid-finalize, or
finalizing shows overlapping the next batch), after appending a line to the file named by
``SHOTLINE_FAKE_FINALIZE_MARKER`` when that is set (so a test sees finalizing has begun).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from pipeline.brand.config import BrandConfig
from pipeline.settings import Settings
from pipeline.types import (
    Decision,
    FilterDecision,
    FinalImage,
    Gate,
    GateItem,
    GenerationOutput,
    Generator,
    KeepPixels,
    ProvenanceInfo,
    ShotParams,
)

MAX_SIDE = 4096


def _png(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


class FixedImageGenerator:
    """Returns the same small image for every shot, immediately."""

    architecture = ""  # not in the batch table: the settings' batch size

    def __init__(self, model_id: str, size: int | None = None) -> None:
        self.model_id = model_id
        size = size or int(os.environ.get("SHOTLINE_FAKE_IMAGE_SIZE", "64") or 64)
        # A fixed pseudo-random pattern (not a flat colour) so a watermark has texture to use.
        pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        self.image = Image.fromarray(pixels, "RGB")
        self.png = _png(self.image)
        self.sha256 = hashlib.sha256(self.png).hexdigest()
        self.delay_s = float(os.environ.get("SHOTLINE_FAKE_GENERATE_DELAY_S", "0") or 0)

    def inpainter(self) -> None:
        return None  # packshot scenes are generated plainly, the product composited over

    def generate(
        self, shots: Sequence[ShotParams], batch_id: str | None = None
    ) -> list[GenerationOutput]:
        if self.delay_s:
            time.sleep(self.delay_s)
        outs = []
        for p in shots:
            ok = all(8 <= side <= MAX_SIDE and side % 8 == 0 for side in (p.width, p.height))
            outs.append(
                GenerationOutput(
                    shot_id=p.shot_id,
                    image=self.image if ok else None,
                    png=self.png if ok else None,
                    sha256=self.sha256 if ok else None,
                    model_digest="0" * 64,
                    timings={"total_s": 0.0},
                    device="fake",
                    library_versions={"fake": "1"},
                    batch_id=batch_id or "",
                    error=None if ok else f"impossible size {p.width}x{p.height}",
                )
            )
        return outs


def fixed_image_generator(settings: Settings, model_id: str) -> Generator:
    # Typed as the Protocol, so mypy checks the stand-in against the contract.
    return FixedImageGenerator(model_id)


def _decision(decision: Decision, reasons: list[str]) -> FilterDecision:
    return FilterDecision(
        decision=decision, scores=[], reasons=reasons, policy_version="fake", clip_model="none"
    )


class PassThroughGate:
    """Keeps every image whose product text does not contain "reject"; tags PNGs with the id."""

    def __init__(self) -> None:
        self.finalize_delay_s = float(os.environ.get("SHOTLINE_FAKE_FINALIZE_DELAY_S", "0") or 0)
        self.marker = os.environ.get("SHOTLINE_FAKE_FINALIZE_MARKER") or None

    clip_model = "none"
    image_encoder = None

    def policy_for(self, brand: BrandConfig) -> str:
        return "fake"

    def check(self, items: Sequence[GateItem], policy: Any) -> list[FilterDecision]:
        return [
            _decision("rejected", ["fake:reject"])
            if "reject" in it.product_text.lower()
            else _decision("pending_review", [])
            for it in items
        ]

    def finalize(
        self,
        shot_id: int,
        image: Image.Image,
        provenance: ProvenanceInfo,
        fmt: str | None = None,
        keep: KeepPixels | None = None,  # its PNG changes no pixel: nothing to restore
    ) -> FinalImage:
        if self.marker:
            with open(self.marker, "a", encoding="utf-8") as fh:
                fh.write(f"{shot_id}\n")
        if self.finalize_delay_s:
            time.sleep(self.finalize_delay_s)
        payload = f"{shot_id:016x}"
        data = _png(image, {"shotline:shot_id": str(shot_id)})
        return FinalImage(
            data=data,
            content_type="image/png",
            ext="png",
            sha256=hashlib.sha256(data).hexdigest(),
            payload=payload,
            method="none",
            verified=True,
            bit_accuracy=1.0,
            c2pa_signed=False,
        )


def pass_through_gate(settings: Settings) -> Gate:
    return PassThroughGate()
