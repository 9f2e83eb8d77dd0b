"""The two typed halves of a packshot shot's ``shots.packshot`` JSON column.

``PackshotPlan`` is written at planning (which catalog image, where the product goes, which
inpaint model and ControlNet); ``PackshotRecord`` after generation (how the product was cut
out and placed, where the masks are stored, the exact-pixel check). The column holds both,
merged; these two classes are the only code that knows its shape (``to_json``/``from_json``,
like ``AdapterRef``). Unknown keys are ignored on read, so older rows still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.packshot.placement import PlacementSpec


@dataclass(frozen=True)
class PackshotPlan:
    """What planning chose for a packshot shot."""

    image: str = "variant"  # which catalog image: the variant's own, the product's first...
    position: int | None = None  # its position among the revision's image references
    ref: str | None = None  # the reference as the catalog wrote it
    placement: dict[str, Any] = field(default_factory=dict)  # PlacementSpec fields
    inpaint_model: str | None = None  # the brand's inpainting model, if it names one
    controlnet: dict[str, Any] | None = None  # ControlSpec JSON, checked at plan time

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image": self.image,
            "position": self.position,
            "ref": self.ref,
            "placement": dict(self.placement),
            "inpaint_model": self.inpaint_model,
        }
        if self.controlnet:
            out["controlnet"] = dict(self.controlnet)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PackshotPlan:
        data = data or {}
        return cls(
            image=str(data.get("image") or "variant"),
            position=data.get("position"),
            ref=data.get("ref"),
            placement=dict(data.get("placement") or {}),
            inpaint_model=data.get("inpaint_model") or None,
            controlnet=dict(data["controlnet"]) if data.get("controlnet") else None,
        )

    def placement_spec(self) -> PlacementSpec:
        """The spec as planned (unknown keys ignored, the rest defaulted)."""
        known = {f.name for f in fields(PlacementSpec)}
        values = {k: v for k, v in self.placement.items() if k in known}
        if "fill" in values:
            values["fill"] = tuple(int(c) for c in values["fill"])
        return PlacementSpec(**values)


@dataclass(frozen=True)
class PackshotRecord:
    """What generating a packshot shot made of it (lineage, reproduce, the cpu gate)."""

    cutout: dict[str, Any]  # Cutout.lineage() + mask_key, mask_png_sha256
    placed: dict[str, Any]  # Placed.lineage() + image_key, alpha_key
    source_sha256: str
    fidelity: dict[str, Any] = field(default_factory=dict)  # {"exact": Fidelity.to_json()}

    def to_json(self) -> dict[str, Any]:
        return {
            "cutout": dict(self.cutout),
            "placed": dict(self.placed),
            "source_sha256": self.source_sha256,
            "fidelity": dict(self.fidelity),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PackshotRecord | None:
        """The record on a shot's column, or None before the shot was generated."""
        if not data or not data.get("placed"):
            return None
        return cls(
            cutout=dict(data.get("cutout") or {}),
            placed=dict(data.get("placed") or {}),
            source_sha256=str(data.get("source_sha256") or ""),
            fidelity=dict(data.get("fidelity") or {}),
        )

    @property
    def mask_keys(self) -> tuple[str | None, str | None]:
        """The stored placed canvas and its alpha (what the cpu gate reads back)."""
        return self.placed.get("image_key"), self.placed.get("alpha_key")


def column_json(plan: PackshotPlan, record: PackshotRecord | None = None) -> dict[str, Any]:
    """The ``shots.packshot`` value: the plan, and the record once there is one."""
    return {**plan.to_json(), **(record.to_json() if record is not None else {})}
