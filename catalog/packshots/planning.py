"""Planning packshot shots: which catalog image each shot's product pixels come from.

A packshot template (``source: packshot``) names the image to use (the variant's own, the
product's first, or position N) and a placement. Each shot records the chosen source image
and the placement; the GPU step cuts the product out of it. A product without a usable image
reference is skipped with a warning naming it: planning never fails on image references
(a reference that cannot be fetched fails its shot later, with the URL).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.importing.image_refs import write_revision_refs
from catalog.models import ImportRun, ProductRevision, SourceImageRef
from catalog.packshots.sources import pick_source
from pipeline.sources.refs import ref_base


@dataclasses.dataclass(frozen=True)
class PackshotRequest:
    image: str | int  # "variant" | "first" | position N
    placement: dict[str, Any]
    inpaint_model: str | None = None  # the brand's 9-channel checkpoint, if it names one
    controlnet: Mapping[str, Any] | None = None  # the brand's ControlNet, as shots record it


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return dict(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value)


def packshot_request(
    template: Any,
    inpaint_model: str | None = None,
    controlnet: Mapping[str, Any] | None = None,
) -> PackshotRequest | None:
    """The packshot part of a resolved template, or None for a text-to-image one."""
    if getattr(template, "source", "text") != "packshot":
        return None
    image = getattr(template, "image", None) or "variant"
    placement = _plain(getattr(template, "placement", None))
    return PackshotRequest(image, placement, inpaint_model, controlnet)


def refs_by_revision(
    session: Session, revisions: Sequence[tuple[int, Mapping[str, Any]]]
) -> dict[int, list[SourceImageRef]]:
    """Each revision's image references. Revisions imported before references were kept
    (images in their data, no rows) get them now, resolved against their catalog's folder."""
    ids = [rid for rid, _ in revisions]
    found: dict[int, list[SourceImageRef]] = defaultdict(list)

    def load() -> None:
        found.clear()
        for ref in session.scalars(
            select(SourceImageRef).where(SourceImageRef.product_revision_id.in_(ids))
        ):
            found[ref.product_revision_id].append(ref)

    load()
    missing = [rid for rid, data in revisions if rid not in found and data.get("images")]
    if missing:
        rows = session.execute(
            select(
                ProductRevision.id,
                ProductRevision.data,
                ProductRevision.source_line,
                ImportRun.source_uri,
            )
            .outerjoin(ImportRun, ImportRun.id == ProductRevision.import_run_id)
            .where(ProductRevision.id.in_(missing))
        ).all()
        for rid, data, line, uri in rows:
            base = ref_base(uri) if uri else None
            write_revision_refs(session, [(rid, data, line)], base)
        load()
    return found


def variant_images(data: Mapping[str, Any], skus: Sequence[str], lines: Sequence[int]) -> list[str]:
    """The image cells of the catalog variants a visual variant groups (by sku or line)."""
    wanted_skus, wanted_lines = set(skus), set(lines)
    out: list[str] = []
    for v in data.get("variants") or []:
        if not isinstance(v, Mapping) or not isinstance(v.get("image"), str):
            continue
        if v.get("sku") in wanted_skus or v.get("line") in wanted_lines:
            out.append(v["image"])
    return out


def choose(
    refs: Sequence[SourceImageRef], request: PackshotRequest, images: Sequence[str]
) -> tuple[dict[str, Any] | None, str]:
    """The ``shots`` values for the packshot part (``source_image_id``, ``packshot``), or
    None and why the slot has no usable image."""
    ref, why = pick_source(refs, request.image, images)
    if ref is None:
        return None, why
    return {
        "source_image_id": ref.source_image_id,
        "packshot": {
            "image": request.image,
            "position": ref.position,
            "ref": ref.raw,
            "placement": request.placement,
            "inpaint_model": request.inpaint_model,
            **({"controlnet": dict(request.controlnet)} if request.controlnet else {}),
        },
    }, ""


@dataclasses.dataclass(frozen=True)
class PackshotSlots:
    """The packshot templates of a plan and the image references of one chunk's revisions."""

    requests: Mapping[str, PackshotRequest]
    refs: Mapping[int, list[SourceImageRef]]

    @classmethod
    def for_chunk(
        cls,
        session: Session,
        templates: Sequence[str],
        resolved: Mapping[str, Any],
        rows: Sequence[Any],
        inpaint_model: str | None = None,
        controlnet: Mapping[str, Any] | None = None,
    ) -> PackshotSlots:
        requests = {
            t: r
            for t in templates
            if (r := packshot_request(resolved[t], inpaint_model, controlnet))
        }
        if not requests:
            return cls({}, {})
        return cls(requests, refs_by_revision(session, [(r.revision_id, r.data) for r in rows]))

    def values(self, template: str, row: Any, variant: Any) -> dict[str, Any] | str:
        """Extra ``shots`` values for the slot ({} for text-to-image), or why it is skipped."""
        request = self.requests.get(template)
        if request is None:
            return {}
        images = variant_images(row.data, variant.skus, variant.lines)
        extra, why = choose(self.refs.get(row.revision_id, []), request, images)
        return extra if extra is not None else why
