"""The reject reasons the web picker offers for a brand: ``review: {reject_reasons: [...]}``
in its YAML (as the file says now, like ``reviewers:``), else the config stored at the last
plan, else the app's defaults. A reviewer may always type a reason of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from catalog.models import Brand
from pipeline.brand.config import BrandConfigError, ReviewSpec
from pipeline.brand.loader import brand_cache, file_stamp

DEFAULT_REJECT_REASONS = (
    "product looks wrong",
    "wrong colour",
    "artifacts",
    "off-brand style",
    "text or logo in the image",
    "not product-safe",
)


class ReasonCache:
    """A brand file's reasons: the file is loaded again only when it changes (``brand_cache``,
    shared with the review authorisation): the queue page asks for every card and loading a
    brand compiles its templates."""

    def __init__(self, brands_dir: Path | None) -> None:
        self.brands_dir = brands_dir

    def _from_file(self, name: str) -> tuple[str, ...] | None:
        """The file's reasons; None when there is no file, it lists none, or it does not load
        (the picker then falls back: showing reasons never refuses a review)."""
        if self.brands_dir is None:
            return None
        for ext in (".yaml", ".yml"):
            path = self.brands_dir / f"{name}{ext}"
            if file_stamp(path) is None:
                continue
            try:
                review = brand_cache.load(path).review
            except BrandConfigError:
                review = None
            return tuple(review.reject_reasons) if review and review.reject_reasons else None
        return None

    def for_brand(self, brand: Brand | None) -> list[str]:
        if brand is None:
            return list(DEFAULT_REJECT_REASONS)
        reasons = self._from_file(brand.name) or _stored(brand.config)
        return list(reasons or DEFAULT_REJECT_REASONS)


def _stored(config: dict[str, Any] | None) -> tuple[str, ...] | None:
    raw = (config or {}).get("review")
    if not isinstance(raw, dict):
        return None
    try:
        return tuple(ReviewSpec.model_validate(raw).reject_reasons) or None
    except ValidationError:
        return None
