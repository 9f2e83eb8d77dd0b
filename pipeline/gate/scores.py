"""CLIP gate filter: safety, competitor/logo and product-match scores, and the decision.

Three kinds of scores per image, all cosine similarities in CLIP space:

- **safety**: the full image against editable unsafe-concept prompts, each with its own
  threshold (the idea of diffusers' StableDiffusionSafetyChecker, with readable concepts);
- **competitor / logo**: "a product with the X logo" prompts for each competitor name and
  alias, and competitor logo reference images, scored over a crop grid (the full image plus
  an NxN tiling, max-pooled) because a small logo is invisible at full-image scale;
- **product match**: the full image against the product's own text; below
  ``product_match_min`` the image does not show the product.

Text and logo embeddings are computed once per policy and cached. All crops of a batch go
through the encoder in one call. The decision itself (``decide``) is a pure function of the
scores, so it is tested on injected numbers; ``compute_scores`` is a pure function of
embeddings.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from pipeline.gate.clip import ImageTextEncoder
from pipeline.gate.clip_preprocess import grid_boxes, pil_to_pixels, pixel_grid
from pipeline.gate.policy import GateError, GatePolicy, ScoreSet, decide
from pipeline.images import load_image_file
from pipeline.types import FilterDecision, GateItem


@dataclass(frozen=True)
class PolicyEmbeddings:
    safety: np.ndarray  # (n_safety, d)
    competitor_text: np.ndarray  # (n_prompts, d)
    competitor_owner: np.ndarray  # (n_prompts,) index into policy.competitors
    logos: np.ndarray  # (n_logos, d)
    logo_owner: np.ndarray  # (n_logos,)


def _max_by_owner(sims: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Max of ``sims`` (n_crops, n_refs) per owner over refs and crops, and its crop index."""
    best = np.full(n, np.nan, dtype=np.float64)
    crop = np.zeros(n, dtype=np.int64)
    for k in range(n):
        cols = np.flatnonzero(owner == k)
        if cols.size == 0:
            continue
        sub = sims[:, cols]
        flat = int(np.argmax(sub))
        crop[k] = flat // cols.size
        best[k] = float(sub.flat[flat])
    return best, crop


def compute_scores(
    crop_embs: np.ndarray, product_emb: np.ndarray, pe: PolicyEmbeddings, n_competitors: int
) -> ScoreSet:
    """Scores of one image from its crop embeddings (row 0 = full image), all L2-normalised."""
    full = crop_embs[0]
    safety = pe.safety @ full if len(pe.safety) else np.zeros(0)
    comp, comp_crop = _max_by_owner(
        crop_embs @ pe.competitor_text.T, pe.competitor_owner, n_competitors
    )
    logo, logo_crop = _max_by_owner(crop_embs @ pe.logos.T, pe.logo_owner, n_competitors)
    return ScoreSet(
        safety=np.asarray(safety, dtype=np.float64),
        competitor=comp,
        competitor_crop=comp_crop,
        logo=logo,
        logo_crop=logo_crop,
        product=float(full @ product_emb),
        embedding=np.asarray(full, dtype=np.float32),
    )


def crop_grid(image: Image.Image, n: int) -> list[Image.Image]:
    """The full image followed by an ``n`` x ``n`` tiling (n <= 1: the full image only)."""
    image = image.convert("RGB")
    return [image] + [image.crop(box) for box in grid_boxes(*image.size, n)[1:]]


@dataclass
class ClipFilter:
    encoder: ImageTextEncoder
    crop_grid: int = 3
    text_cache_size: int = 4096
    _policy_cache: dict[str, PolicyEmbeddings] = field(default_factory=dict, repr=False)
    _text_cache: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict, repr=False)

    @property
    def clip_model(self) -> str:
        return self.encoder.name

    def policy_embeddings(self, policy: GatePolicy) -> PolicyEmbeddings:
        """Concept text and logo embeddings, computed once per policy version."""
        cached = self._policy_cache.get(policy.version)
        if cached is not None:
            return cached
        texts = [c.prompt for c in policy.safety]
        owners: list[int] = []
        for k, comp in enumerate(policy.competitors):
            texts.extend(comp.prompts)
            owners.extend([k] * len(comp.prompts))
        embs = self._encode_texts(texts) if texts else np.zeros((0, self._dim()), np.float32)
        n_s = len(policy.safety)
        logo_images: list[Image.Image] = []
        logo_owner: list[int] = []
        for k, comp in enumerate(policy.competitors):
            for path in comp.logos:
                logo_images.append(_load_logo(path, policy.brand, comp.name))
                logo_owner.append(k)
        d = embs.shape[1]
        logos = self.encoder.encode_images(logo_images) if logo_images else np.zeros((0, d))
        pe = PolicyEmbeddings(
            safety=embs[:n_s],
            competitor_text=embs[n_s:],
            competitor_owner=np.asarray(owners, dtype=np.int64),
            logos=np.asarray(logos, dtype=np.float32),
            logo_owner=np.asarray(logo_owner, dtype=np.int64),
        )
        self._policy_cache[policy.version] = pe
        return pe

    def _dim(self) -> int:
        return int(self.encoder.encode_texts(["a"]).shape[1])

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.asarray(self.encoder.encode_texts(list(texts)), dtype=np.float32)

    def product_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Product text embeddings, LRU-cached: every template of a SKU shares its text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            embs = self._encode_texts(missing)
            for t, e in zip(missing, embs, strict=True):
                self._text_cache[t] = e
        out = []
        for t in texts:
            self._text_cache.move_to_end(t)
            out.append(self._text_cache[t])
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        return np.stack(out)

    def score(
        self,
        images: Sequence[Image.Image],
        product_texts: Sequence[str],
        policy: GatePolicy,
        pixels: Sequence[Any] | None = None,
    ) -> list[ScoreSet]:
        """Scores for a batch: every crop of every image goes through the encoder in one call.
        ``pixels`` (uint8 (3, H, W) tensors, e.g. still on the GPU that decoded them) stand in
        for the PIL images where given; they give the same scores for the same pixels."""
        pe = self.policy_embeddings(policy)
        embs = self._crop_embeddings(images, pixels)
        per = len(embs) // max(len(images), 1)
        prompts = [policy.product_prompt.format(text=t) for t in product_texts]
        products = self.product_embeddings(prompts)
        return [
            compute_scores(embs[i * per : (i + 1) * per], products[i], pe, len(policy.competitors))
            for i in range(len(images))
        ]

    def _crop_embeddings(
        self, images: Sequence[Image.Image], pixels: Sequence[Any] | None
    ) -> np.ndarray:
        encode_pixels = getattr(self.encoder, "encode_pixels", None)
        if encode_pixels is None:  # an encoder of PIL images only (the test stand-ins)
            crops = [c for image in images for c in crop_grid(image, self.crop_grid)]
            return np.asarray(self.encoder.encode_images(crops), dtype=np.float32)
        tiles: list[Any] = []
        for i, image in enumerate(images):
            px = pixels[i] if pixels is not None else None
            tiles.extend(pixel_grid(pil_to_pixels(image) if px is None else px, self.crop_grid))
        return np.asarray(encode_pixels(tiles), dtype=np.float32)

    def check(self, items: Sequence[GateItem], policy: GatePolicy) -> list[FilterDecision]:
        if not items:
            return []
        scores = self.score(
            [it.image for it in items],
            [it.product_text for it in items],
            policy,
            pixels=[it.pixels for it in items],
        )
        return [decide(s, policy, self.clip_model) for s in scores]


def _load_logo(path: str, brand: str, competitor: str) -> Image.Image:
    try:
        return load_image_file(path)
    except ValueError as exc:  # InputFileError, ImageError: both name the file
        raise GateError(
            f"brand {brand!r}: logo for competitor {competitor!r} unreadable: {exc}"
        ) from None
