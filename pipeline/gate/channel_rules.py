"""Slot rules: what a marketplace slot demands of the final image, checked as pure functions.

A template's ``rules`` (``pipeline.brand.config.SlotRules``) name what the slot it fills
demands; each check returns one ``Score`` row (kind ``slot_rule``) and, when the image breaks
the rule, one reason. ``pipeline.gate.policy.with_checks`` folds them into the decision.

- ``white_background``: outside the product every pixel is RGB 255 (within
  ``white_tolerance``). A packshot's product is known from its placement (its alpha > 0,
  grown by ``EDGE_GUARD_PX`` so the blended edge and JPEG ringing next to it do not count):
  row ``background_not_white``, the share of the remaining pixels that are not white, must
  be 0. A contact or drop shadow falls outside the product and fails the rule: main-image
  templates place without one. A text-to-image shot has no mask: the product is estimated as
  the non-white region (holes filled), which makes "outside the product" white by
  construction, so what is checked is the frame's edge instead: row ``edge_not_white``, the
  share of the outer ring of the frame that is not white, may be at most
  ``MAX_EDGE_NOT_WHITE`` (a product may touch one side of the frame, not sit in a scene).
- ``min_product_share``: the product's box along its longer extent, as a fraction of the
  frame's side along that axis (``max(box_w / W, box_h / H)``): how marketplaces read "fills
  85 % of the frame". Row ``product_share``.
- ``min_long_side``: the final image's longer side in pixels. Row ``long_side``.
- ``aspect``: width:height within the rounding of one pixel. Row ``aspect`` (width / height).

Reasons start with "slot rule" (metrics label rejections by their first word).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from pipeline.brand.config import SlotRules
from pipeline.types import Score

KIND = "slot_rule"
EDGE_GUARD_PX = 2
MAX_EDGE_NOT_WHITE = 0.25


def _score(name: str, value: float, threshold: float | None, triggered: bool) -> Score:
    return Score(name, KIND, float(value), threshold, bool(triggered))


def white_pixels(image: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """(H, W) bool: every channel at least ``255 - tolerance``."""
    return np.asarray(image.min(axis=2) >= 255 - tolerance)


def estimate_product(image: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """The product of a shot without a mask: the non-white region, its holes filled (a white
    label on the product is still the product)."""
    return np.asarray(ndimage.binary_fill_holes(~white_pixels(image, tolerance)), dtype=bool)


def _edge_ring(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    px = max(1, round(0.01 * max(h, w)))
    ring = np.ones((h, w), bool)
    ring[px : h - px, px : w - px] = False
    return ring


def check_white_background(
    image: np.ndarray, product: np.ndarray | None, tolerance: int = 0
) -> tuple[Score, str | None]:
    """Pure white outside the product (``product``: a known (H, W) bool mask, or None)."""
    white = white_pixels(image, tolerance)
    limit = f"RGB {255 - tolerance}" if tolerance else "RGB 255"
    if product is None:
        ring = _edge_ring(white.shape)
        share = float((~white[ring]).mean())
        bad = share > MAX_EDGE_NOT_WHITE
        reason = (
            f"slot rule white_background: {share:.1%} of the frame's edge is below {limit} "
            f"(at most {MAX_EDGE_NOT_WHITE:.0%})"
        )
        return _score("edge_not_white", share, MAX_EDGE_NOT_WHITE, bad), reason if bad else None
    kernel = np.ones((2 * EDGE_GUARD_PX + 1, 2 * EDGE_GUARD_PX + 1), np.uint8)
    grown = cv2.dilate(product.astype(np.uint8), kernel).astype(bool)
    background = ~grown
    share = float((~white[background]).mean()) if background.any() else 0.0
    bad = share > 0
    reason = (
        f"slot rule white_background: {share:.2%} of the pixels outside the product are "
        f"below {limit}"
    )
    return _score("background_not_white", share, 0.0, bad), reason if bad else None


def product_share(product: np.ndarray) -> float:
    """``max(box_w / W, box_h / H)`` of the product's bounding box; 0 without a product."""
    if not product.any():
        return 0.0
    _x, _y, bw, bh = cv2.boundingRect(product.astype(np.uint8))
    h, w = product.shape
    return float(max(bw / w, bh / h))


def check_product_share(product: np.ndarray, minimum: float) -> tuple[Score, str | None]:
    share = product_share(product)
    bad = share < minimum
    reason = (
        f"slot rule min_product_share: the product fills {share:.1%} of the frame, "
        f"below {minimum:.1%}"
    )
    return _score("product_share", share, minimum, bad), reason if bad else None


def check_long_side(width: int, height: int, minimum: int) -> tuple[Score, str | None]:
    side = max(width, height)
    bad = side < minimum
    reason = f"slot rule min_long_side: the image is {width}x{height}, long side below {minimum}"
    return _score("long_side", side, minimum, bad), reason if bad else None


def check_aspect(width: int, height: int, aspect: tuple[int, int]) -> tuple[Score, str | None]:
    a, b = aspect
    # Within the rounding of one pixel: 1023x1280 is 4:5, 1000x1010 is not 1:1.
    bad = abs(width * b - height * a) > max(a, b)
    reason = f"slot rule aspect: the image is {width}x{height}, not {a}:{b}"
    return _score("aspect", width / height, a / b, bad), reason if bad else None


def check_rules(
    image: np.ndarray, rules: SlotRules, product: np.ndarray | None = None
) -> tuple[list[Score], list[str]]:
    """Every rule ``rules`` sets, on the final image ((H, W, 3) uint8 RGB). ``product``: the
    product's mask where it is known (a packshot's placement), else it is estimated. A mask
    of another size than the image (an output scaled after placement) is scaled to it."""
    h, w = image.shape[:2]
    if product is not None and product.shape != (h, w):
        resized = cv2.resize(product.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        product = resized.astype(bool)
    checks: list[tuple[Score, str | None]] = []
    if rules.white_background:
        checks.append(check_white_background(image, product, rules.white_tolerance))
    if rules.min_product_share is not None:
        found = product if product is not None else estimate_product(image, rules.white_tolerance)
        checks.append(check_product_share(found, rules.min_product_share))
    if rules.min_long_side is not None:
        checks.append(check_long_side(w, h, rules.min_long_side))
    ratio = rules.aspect_ratio()
    if ratio is not None:
        checks.append(check_aspect(w, h, ratio))
    return [s for s, _ in checks], [r for _, r in checks if r]
