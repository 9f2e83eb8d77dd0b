"""The gate's policy and decision: what one brand checks for, and the pure verdict.

``GatePolicy`` is built from a brand config; ``decide`` turns a ``ScoreSet`` into a
``FilterDecision`` (every score with its threshold, and the reasons). Both are pure, so the
decision is tested on injected numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.gate.nsfw import OPEN_NSFW
from pipeline.types import FilterDecision, Score

if TYPE_CHECKING:
    from pipeline.brand.config import BrandConfig

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


class GateModelError(GateError):
    """A model the gate needs (the CLIP checkpoint, Open-NSFW) is missing or does not load:
    every try on this deployment meets it again, so it is a ``model_load`` failure, not a
    retry."""


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
    is a new version even when nobody bumped the number. The digest has two parts,
    ``<concepts>.<thresholds>``: see ``concepts_digest``."""

    brand: str
    version: str
    safety: tuple[SafetyConceptSpec, ...]
    competitors: tuple[CompetitorConcept, ...]
    competitor_threshold: float
    logo_threshold: float
    product_match_min: float
    product_prompt: str = PRODUCT_PROMPT
    open_nsfw_threshold: float | None = None  # None: the brand doesn't ask for Open-NSFW

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
        open_nsfw_threshold: float | None = None,
    ) -> GatePolicy:
        concepts: dict[str, Any] = {
            "safety": [(s.name, s.prompt) for s in safety],
            "competitors": [asdict(c) for c in competitors],
            "product_prompt": PRODUCT_PROMPT,
        }
        thresholds: dict[str, Any] = {
            "safety": [(s.name, s.threshold) for s in safety],
            "competitor_threshold": competitor_threshold,
            "logo_threshold": logo_threshold,
            "product_match_min": product_match_min,
        }
        if open_nsfw_threshold is not None:
            # Only when asked for, so every existing policy keeps its version. The weights'
            # pin is what is scored; the threshold only where it cuts.
            concepts["open_nsfw"] = OPEN_NSFW.sha256
            thresholds["open_nsfw"] = open_nsfw_threshold
        return cls(
            brand=brand,
            # Two digests: what is scored (concepts) and where it cuts (thresholds). Stored
            # scores stay valid across a thresholds-only change (``gate rescore``).
            version=f"{brand}:v{declared_version}:{_digest(concepts)}.{_digest(thresholds)}",
            safety=tuple(safety),
            competitors=tuple(competitors),
            competitor_threshold=competitor_threshold,
            logo_threshold=logo_threshold,
            product_match_min=product_match_min,
            open_nsfw_threshold=open_nsfw_threshold,
        )

    @property
    def concepts_digest(self) -> str:
        """The digest of what is scored: concept names, prompts, logos, the product prompt.
        Stored scores made under the same one (and the same CLIP model) can be re-decided."""
        return concepts_digest_of(self.version) or ""

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
            open_nsfw_threshold=None if sp.open_nsfw is None else sp.open_nsfw.threshold,
        )


def _digest(content: dict[str, Any]) -> str:
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def concepts_digest_of(policy_version: str) -> str | None:
    """The concepts part of a policy version (``brand:vN:<concepts>.<thresholds>``); None for
    a version written before the split (its scores then cannot be trusted to line up)."""
    tail = policy_version.rsplit(":", 1)[-1]
    head, dot, rest = tail.partition(".")
    return head if dot and head and rest else None


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
    embedding: np.ndarray | None = None  # the full-image feature (row 0 of the crops)


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
        embedding=scores.embedding,
    )


def with_checks(
    decision: FilterDecision, scores: Sequence[Score | Mapping[str, Any]], reasons: Sequence[str]
) -> FilterDecision:
    """``decision`` with checks made outside CLIP added (packshot fidelity): their scores
    join the decision's, and any reason rejects it. With ``decide`` the only code that makes
    a gate decision; a check never clears a rejection."""
    if not scores and not reasons:
        return decision
    rows = [s.to_json() if isinstance(s, Score) else dict(s) for s in scores]
    return replace(
        decision,
        decision="rejected" if reasons else decision.decision,
        scores=[*decision.scores, *rows],
        reasons=[*decision.reasons, *reasons],
    )


def open_nsfw_check(score: float, threshold: float) -> tuple[list[Score], list[str]]:
    """The Open-NSFW row and its reason, for ``with_checks``: rejected at or above
    ``threshold``. A score that is not a number rejects too (a safety check fails closed)."""
    hit = not score < threshold
    row = Score(OPEN_NSFW.name, "safety", score, threshold, hit)
    return [row], [f"safety:{OPEN_NSFW.name}"] if hit else []


def _row(name: str, kind: str, score: float, threshold: float, triggered: bool) -> dict[str, Any]:
    return Score(name, kind, float(score), float(threshold), bool(triggered)).to_json()
