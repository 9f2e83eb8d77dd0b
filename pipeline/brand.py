"""Brand configuration (``samples/brands/*.yaml``), validated with pydantic.

The digest of the normalized config is stored on ``brands`` and on every shot, so a
shot names the exact config version it was planned from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class BrandConfigError(ValueError):
    """A brand file that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSpec(_Model):
    name: str
    path: str  # a local path (relative to the brand file) or a URI
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weight: float = 1.0
    trigger_word: str | None = None
    version: str | None = None
    base_family: str | None = None


class TemplateSpec(_Model):
    prompt: str
    negative_prompt: str = ""
    preset: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    # LoRA name -> weight; None means every brand LoRA at its default weight.
    loras: dict[str, float] | None = None


class PresetSpec(_Model):
    width: int = 512
    height: int = 512
    steps: int = 30
    guidance: float = 7.0
    scheduler: str = "dpmpp_2m"


class CompetitorSpec(_Model):
    name: str
    aliases: list[str] = Field(default_factory=list)
    logos: list[str] = Field(default_factory=list)


class SafetyConcept(_Model):
    name: str
    prompt: str
    threshold: float


class SafetyPolicy(_Model):
    version: str = "1"
    concepts: list[SafetyConcept] = Field(default_factory=list)
    competitor_threshold: float = 0.3
    logo_threshold: float = 0.85
    product_match_min: float = 0.15


class BrandConfig(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    display_name: str | None = None
    base_model: str = "tiny"
    loras: list[LoraSpec] = Field(default_factory=list)
    presets: dict[str, PresetSpec] = Field(default_factory=dict)
    templates: dict[str, TemplateSpec] = Field(default_factory=dict)
    visual_options: list[str] = Field(
        default_factory=lambda: ["Color", "Colour", "Material", "Pattern"]
    )
    competitors: list[CompetitorSpec] = Field(default_factory=list)
    blocked_terms: list[str] = Field(default_factory=list)
    safety: SafetyPolicy = Field(default_factory=SafetyPolicy)
    # For generic CSVs: our field name -> the CSV column that holds it.
    column_map: dict[str, str] = Field(default_factory=dict)

    # Set by load_brand: where relative LoRA/logo paths resolve from. Not part of the digest.
    source_path: Path | None = Field(default=None, exclude=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"source_path"})

    def digest(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def resolve_path(self, p: str) -> Path:
        path = Path(p)
        if path.is_absolute() or self.source_path is None:
            return path
        return (self.source_path.parent / path).resolve()


def _format_validation(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        lines.append(f"{loc}: {err['msg']}")
    return lines


def load_brand(path: str | Path) -> BrandConfig:
    """Load and validate a brand YAML file; raise ``BrandConfigError`` naming each field."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BrandConfigError(str(p), ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise BrandConfigError(str(p), [f"invalid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise BrandConfigError(str(p), ["top level must be a mapping"])
    try:
        cfg = BrandConfig.model_validate(raw)
    except ValidationError as exc:
        raise BrandConfigError(str(p), _format_validation(exc)) from None
    cfg.source_path = p.resolve()
    return cfg


def find_brand(brands_dir: Path, name: str) -> BrandConfig:
    """The brand called ``name`` from ``brands_dir/<name>.yaml`` (or ``.yml``)."""
    for ext in (".yaml", ".yml"):
        candidate = brands_dir / f"{name}{ext}"
        if candidate.exists():
            return load_brand(candidate)
    raise BrandConfigError(str(brands_dir / f"{name}.yaml"), [f"no brand config named {name!r}"])
