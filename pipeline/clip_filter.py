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

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image

from pipeline.clip_preprocess import FastClipPreprocess

if TYPE_CHECKING:
    from pipeline.brand import BrandConfig
    from pipeline.settings import Settings

Decision = Literal["rejected", "pending_review"]

# Used when a brand lists no safety concepts. Thresholds are starting points for a real
# CLIP ViT-B/L; run ``shotline calibrate`` on labelled examples before trusting them.
DEFAULT_SAFETY_CONCEPTS: tuple[tuple[str, str, float], ...] = (
    ("nudity", "a photo of a naked person, nudity, explicit sexual content", 0.28),
    ("gore", "a photo of gore, blood, a bloody wound, violence", 0.28),
    ("weapons", "a photo of a gun, a rifle, a knife used as a weapon", 0.28),
    ("hate_symbols", "a hate symbol, a swastika, extremist propaganda", 0.28),
    ("drugs", "a photo of illegal drugs, syringes, drug paraphernalia", 0.28),
)
COMPETITOR_PROMPT = "a product with the {name} logo"
PRODUCT_PROMPT = "a product photo of {text}"


class GateError(ValueError):
    """The gate cannot run: bad policy (missing logo file), bad model configuration."""


class ImageTextEncoder(Protocol):
    """What the filter needs from CLIP. Rows are L2-normalised float32 embeddings."""

    name: str

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


# --- policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetyConceptSpec:
    name: str
    prompt: str
    threshold: float


@dataclass(frozen=True)
class CompetitorConcept:
    name: str
    prompts: tuple[str, ...]
    logos: tuple[str, ...] = ()  # resolved file paths of logo reference images


@dataclass(frozen=True)
class GatePolicy:
    """What the gate checks for one brand. ``version`` names it in every filter result: the
    brand's ``safety.version`` plus a digest of the content, so an edited prompt or threshold
    is a new version even when nobody bumped the number."""

    brand: str
    version: str
    safety: tuple[SafetyConceptSpec, ...]
    competitors: tuple[CompetitorConcept, ...]
    competitor_threshold: float
    logo_threshold: float
    product_match_min: float
    product_prompt: str = PRODUCT_PROMPT

    @classmethod
    def build(
        cls,
        brand: str,
        declared_version: str,
        safety: Sequence[SafetyConceptSpec],
        competitors: Sequence[CompetitorConcept],
        competitor_threshold: float,
        logo_threshold: float,
        product_match_min: float,
    ) -> GatePolicy:
        content = {
            "safety": [asdict(s) for s in safety],
            "competitors": [asdict(c) for c in competitors],
            "competitor_threshold": competitor_threshold,
            "logo_threshold": logo_threshold,
            "product_match_min": product_match_min,
            "product_prompt": PRODUCT_PROMPT,
        }
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return cls(
            brand=brand,
            version=f"{brand}:v{declared_version}:{digest}",
            safety=tuple(safety),
            competitors=tuple(competitors),
            competitor_threshold=competitor_threshold,
            logo_threshold=logo_threshold,
            product_match_min=product_match_min,
        )

    @classmethod
    def from_brand(cls, brand_cfg: BrandConfig) -> GatePolicy:
        sp = brand_cfg.safety
        if sp.concepts:
            safety = [SafetyConceptSpec(c.name, c.prompt, c.threshold) for c in sp.concepts]
        else:
            safety = [SafetyConceptSpec(n, p, t) for n, p, t in DEFAULT_SAFETY_CONCEPTS]
        competitors = []
        for comp in brand_cfg.competitors:
            names = [comp.name, *comp.aliases]
            prompts = tuple(dict.fromkeys(COMPETITOR_PROMPT.format(name=n) for n in names))
            logos = tuple(str(brand_cfg.resolve_path(p)) for p in comp.logos)
            competitors.append(CompetitorConcept(comp.name, prompts, logos))
        return cls.build(
            brand=brand_cfg.name,
            declared_version=sp.version,
            safety=safety,
            competitors=competitors,
            competitor_threshold=sp.competitor_threshold,
            logo_threshold=sp.logo_threshold,
            product_match_min=sp.product_match_min,
        )


# --- scores and decision (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class ScoreSet:
    """Scores of one image. Arrays are aligned with the policy's concept lists."""

    safety: np.ndarray  # (n_safety,)
    competitor: np.ndarray  # (n_competitors,) max over prompts and crops
    competitor_crop: np.ndarray  # (n_competitors,) crop index of that max (0 = full image)
    logo: np.ndarray  # (n_competitors,) max over logos and crops; nan when no logos
    logo_crop: np.ndarray  # (n_competitors,)
    product: float


@dataclass(frozen=True)
class FilterDecision:
    decision: Decision
    scores: list[dict[str, Any]]
    reasons: list[str]
    policy_version: str
    clip_model: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def decide(scores: ScoreSet, policy: GatePolicy, clip_model: str) -> FilterDecision:
    """Every score with its threshold; rejected when any concept triggers.

    A concept triggers when its score is at or above its threshold; the product matches when
    its score is at or above ``product_match_min``. Reasons are short stable codes (they
    become metric labels): ``safety:<name>``, ``competitor:<name>``, ``logo:<name>``,
    ``product_mismatch``.
    """
    rows: list[dict[str, Any]] = []
    reasons: list[str] = []
    for i, concept in enumerate(policy.safety):
        s = float(scores.safety[i])
        hit = s >= concept.threshold
        rows.append(_row(concept.name, "safety", s, concept.threshold, hit))
        if hit:
            reasons.append(f"safety:{concept.name}")
    for i, comp in enumerate(policy.competitors):
        s = float(scores.competitor[i])
        hit = s >= policy.competitor_threshold
        row = _row(comp.name, "competitor", s, policy.competitor_threshold, hit)
        row["crop"] = int(scores.competitor_crop[i])
        rows.append(row)
        if hit:
            reasons.append(f"competitor:{comp.name}")
        if comp.logos:
            s = float(scores.logo[i])
            hit = s >= policy.logo_threshold
            row = _row(comp.name, "logo", s, policy.logo_threshold, hit)
            row["crop"] = int(scores.logo_crop[i])
            rows.append(row)
            if hit:
                reasons.append(f"logo:{comp.name}")
    mismatch = scores.product < policy.product_match_min
    rows.append(
        _row("product", "product_match", scores.product, policy.product_match_min, mismatch)
    )
    if mismatch:
        reasons.append("product_mismatch")
    return FilterDecision(
        decision="rejected" if reasons else "pending_review",
        scores=rows,
        reasons=reasons,
        policy_version=policy.version,
        clip_model=clip_model,
    )


def _row(name: str, kind: str, score: float, threshold: float, triggered: bool) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "score": float(score),
        "threshold": float(threshold),
        "triggered": bool(triggered),
    }


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
    )


def crop_grid(image: Image.Image, n: int) -> list[Image.Image]:
    """The full image followed by an ``n`` x ``n`` tiling (n <= 1: the full image only)."""
    image = image.convert("RGB")
    crops = [image]
    if n <= 1:
        return crops
    w, h = image.size
    xs = [round(i * w / n) for i in range(n + 1)]
    ys = [round(j * h / n) for j in range(n + 1)]
    for j in range(n):
        for i in range(n):
            crops.append(image.crop((xs[i], ys[j], xs[i + 1], ys[j + 1])))
    return crops


# --- the filter ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GateItem:
    shot_id: int
    image: Image.Image
    product_text: str


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
        self, images: Sequence[Image.Image], product_texts: Sequence[str], policy: GatePolicy
    ) -> list[ScoreSet]:
        """Scores for a batch: every crop of every image goes through the encoder in one call."""
        pe = self.policy_embeddings(policy)
        crops: list[Image.Image] = []
        for image in images:
            crops.extend(crop_grid(image, self.crop_grid))
        embs = np.asarray(self.encoder.encode_images(crops), dtype=np.float32)
        per = len(crops) // max(len(images), 1)
        prompts = [policy.product_prompt.format(text=t) for t in product_texts]
        products = self.product_embeddings(prompts)
        return [
            compute_scores(embs[i * per : (i + 1) * per], products[i], pe, len(policy.competitors))
            for i in range(len(images))
        ]

    def check(self, items: Sequence[GateItem], policy: GatePolicy) -> list[FilterDecision]:
        if not items:
            return []
        scores = self.score([it.image for it in items], [it.product_text for it in items], policy)
        return [decide(s, policy, self.clip_model) for s in scores]


def _load_logo(path: str, brand: str, competitor: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise GateError(
            f"brand {brand!r}: logo for competitor {competitor!r} unreadable: {path}: {exc}"
        ) from None


# --- calibration -------------------------------------------------------------------------


def threshold_for_precision(
    positives: Sequence[float], negatives: Sequence[float], target: float
) -> dict[str, Any]:
    """The lowest threshold (most recall) at which ``score >= threshold`` reaches ``target``
    precision on the labelled scores. ``threshold`` is None when no threshold reaches it."""
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    best: dict[str, Any] = {
        "threshold": None,
        "precision": None,
        "recall": 0.0,
        "tp": 0,
        "fp": 0,
        "reached": False,
    }
    best_precision = 0.0
    for t in np.unique(pos):  # ascending: the first that reaches the target has most recall
        tp = int(np.sum(pos >= t))
        fp = int(np.sum(neg >= t))
        precision = tp / (tp + fp)
        best_precision = max(best_precision, precision)
        if precision >= target:
            return {
                "threshold": float(t),
                "precision": precision,
                "recall": tp / len(pos),
                "tp": tp,
                "fp": fp,
                "reached": True,
            }
    best["best_precision"] = best_precision
    return best


def calibrate(
    flt: ClipFilter,
    policy: GatePolicy,
    positives: Mapping[str, Sequence[Image.Image]],
    negatives: Sequence[Image.Image],
    precision: float = 0.95,
) -> list[dict[str, Any]]:
    """Per concept, the threshold that reaches ``precision`` on labelled examples.

    ``positives`` maps a concept name (a safety concept or a competitor) to images that
    show it; ``negatives`` are clean images. Competitor scores use the crop grid, like the gate.
    """
    neg_scores = flt.score(list(negatives), [""] * len(negatives), policy) if negatives else []
    out = []
    for name, images in positives.items():
        kind, idx = _concept_index(policy, name)
        pos_scores = flt.score(list(images), [""] * len(images), policy) if images else []
        pos = [_concept_score(s, kind, idx) for s in pos_scores]
        neg = [_concept_score(s, kind, idx) for s in neg_scores]
        current = policy.safety[idx].threshold if kind == "safety" else policy.competitor_threshold
        res = (
            threshold_for_precision(pos, neg, precision)
            if pos
            else {"threshold": None, "reached": False}
        )
        out.append(
            {
                "concept": name,
                "kind": kind,
                "current_threshold": current,
                "n_positives": len(pos),
                "n_negatives": len(neg),
                "target": precision,
                **res,
            }
        )
    return out


def _concept_index(policy: GatePolicy, name: str) -> tuple[str, int]:
    key = name.casefold()
    for i, c in enumerate(policy.safety):
        if c.name.casefold() == key:
            return "safety", i
    for i, comp in enumerate(policy.competitors):
        if comp.name.casefold() == key:
            return "competitor", i
    known = [c.name for c in policy.safety] + [c.name for c in policy.competitors]
    raise GateError(f"unknown concept {name!r} for brand {policy.brand!r}; known: {known}")


def _concept_score(s: ScoreSet, kind: str, idx: int) -> float:
    return float(s.safety[idx] if kind == "safety" else s.competitor[idx])


# --- open_clip loading (the production path; the tiny preset goes through it too) --------


class OpenClipEncoder:
    """An open_clip model + its eval transform + tokenizer behind ``ImageTextEncoder``."""

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        name: str,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.batch_size = batch_size
        # The stock transform, batched; None for a non-standard transform (then per image).
        self.fast_preprocess = FastClipPreprocess.from_transform(preprocess)

    def _batch(self, images: Sequence[Image.Image]) -> Any:
        import torch

        if self.fast_preprocess is not None:
            try:
                return self.fast_preprocess(images)
            except ValueError:  # an image the stock transform pads: let it do so
                pass
        return torch.stack([self.preprocess(im.convert("RGB")) for im in images])

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = self._batch(images[i : i + self.batch_size])
                feats = self.model.encode_image(batch.to(self.device))
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            feats = self.model.encode_text(tokens)
            return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()


def _looks_like_path(pretrained: str) -> bool:
    return "/" in pretrained or "\\" in pretrained or Path(pretrained).suffix != ""


def load_open_clip(
    model_name: str, pretrained: str | None, device: str = "cpu", cache_dir: Path | None = None
) -> OpenClipEncoder:
    """Load an open_clip architecture with a pretrained tag or a local ``.safetensors``
    checkpoint. Pickle checkpoints (.pt/.bin/.ckpt/.pth) are refused: loading them runs code."""
    import open_clip

    if pretrained and _looks_like_path(pretrained):
        path = Path(pretrained)
        if path.suffix != ".safetensors":
            raise GateError(
                f"CLIP checkpoint {path}: only .safetensors files are accepted "
                "(pickle formats can run code when loaded)"
            )
        if not path.is_file():
            raise GateError(f"CLIP checkpoint {path}: file not found")
    if model_name not in open_clip.list_models():
        raise GateError(f"unknown open_clip architecture {model_name!r}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=pretrained,
            device=device,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise GateError(f"cannot load CLIP {model_name!r} ({pretrained}): {exc}") from None
    tokenizer = open_clip.get_tokenizer(model_name)
    label = f"{model_name}:{Path(pretrained).name if pretrained else 'random'}"
    return OpenClipEncoder(model, preprocess, tokenizer, label, device=device)


def load_clip_encoder(settings: Settings) -> OpenClipEncoder:
    """The CLIP encoder named by settings; ``clip_model="tiny"`` builds the offline preset."""
    from pipeline.tiny_clip import TINY_CLIP_NAME, ensure_tiny_clip

    device = "cpu" if settings.device == "auto" else settings.device
    if settings.device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if settings.clip_model == "tiny":
        checkpoint = ensure_tiny_clip(settings.model_cache_dir)
        enc = load_open_clip(TINY_CLIP_NAME, str(checkpoint), device=device)
        enc.name = "tiny-clip (random weights)"
        return enc
    return load_open_clip(
        settings.clip_model,
        settings.clip_pretrained,
        device=device,
        cache_dir=settings.model_cache_dir / "open_clip",
    )
