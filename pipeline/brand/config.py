"""Brand configuration (``samples/brands/*.yaml``), validated with pydantic.

The digest of the normalized config is stored on ``brands`` and on every shot, so a
shot names the exact config version it was planned from.

Validation happens in passes. Pydantic checks the shape of each field; then
``BrandConfig.problems()`` checks what needs the whole file: templates name known
presets and LoRAs. ``pipeline.brand.loader.load_brand`` adds the template checks (each
prompt template compiles in the sandbox, uses only the known variables and renders against
a sample product) and reports every problem at once, each naming its field path and YAML
line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import unquote, urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from pipeline.brand.sanitize import normalize_text
from pipeline.digests import sha256_file
from pipeline.files import InputFileError
from pipeline.generate.schedulers import SCHEDULERS
from pipeline.types import AdapterRef, HiresSpec
from pipeline.weights import check_safetensors

if TYPE_CHECKING:
    from pipeline.packshot.placement import PlacementSpec

Loc = tuple[str | int, ...]


# Weight formats that unpickle arbitrary code when loaded.
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")

NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_ASPECT_RE = re.compile(r"^([1-9][0-9]{0,3}):([1-9][0-9]{0,3})$")
MAX_RULE_SIDE = 16384


class BrandConfigError(ValueError):
    """A brand file that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, path: str, problems: Sequence[str | BrandProblem]) -> None:
        self.path = path
        self.items = [
            p if isinstance(p, BrandProblem) else BrandProblem(field="", message=p)
            for p in problems
        ]
        self.problems = [str(p) for p in self.items]
        super().__init__(f"{path}: " + "; ".join(self.problems))

    def lines(self) -> list[str]:
        """``file:line: field: message``, one per problem (compiler style)."""
        out = []
        for p in self.items:
            where = f"{self.path}:{p.line}" if p.line else self.path
            out.append(f"{where}: {p}")
        return out


@dataclass(frozen=True)
class BrandProblem:
    field: str  # dotted field path, e.g. ``templates.hero_white.prompt`` or ``loras[0].path``
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _has_scheme(uri: str) -> bool:
    # One letter would be a Windows drive, not a scheme.
    scheme = urlparse(uri).scheme
    return len(scheme) > 1


def _uri_path(uri: str) -> str:
    """The path part of a URI or plain path (what its file suffix is read from)."""
    return unquote(urlparse(uri).path) if _has_scheme(uri) else uri


# Numbers a brand file may hold are finite and bounded: NaN never compares true (a safety
# concept at .nan silently never fires), and NaN/inf are not JSON (Postgres refuses the
# digest's JSON naming no field). A CLIP threshold is a cosine, so it lies in [-1, 1].
MAX_SEED = 2**63 - 1
MAX_IMAGE_POSITION = 10_000
LORA_WEIGHT_MAX = 4.0


def _number_field(annotation: Any) -> bool:
    kinds = set(get_args(annotation)) or {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


class _Model(BaseModel):
    # allow_inf_nan=False: .nan, .inf and 1e309 (which YAML reads as inf) are refused.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """YAML ``true`` is not a number (pydantic would read it as 1)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and _number_field(field.annotation):
            raise ValueError(f"must be a number, not {str(v).lower()}")
        return v


class LoraSpec(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    path: str  # a local path (relative to the brand file) or a URI
    sha256: str
    weight: float = Field(default=1.0, ge=-LORA_WEIGHT_MAX, le=LORA_WEIGHT_MAX)
    trigger_word: str | None = None
    version: str | None = None
    base_family: str | None = None
    # Apply an adapter whose tensors only partly match the model (the rest are dropped);
    # without it, ``brands check`` and ``plan`` refuse a partial match.
    allow_partial: bool = False

    @model_serializer(mode="wrap")
    def _drop_default_allow_partial(self, handler: Any) -> Any:
        # Left out at its default, so brands that never set it keep their digest.
        data = handler(self)
        if isinstance(data, dict) and not self.allow_partial:
            data.pop("allow_partial", None)
        return data

    @field_validator("path")
    @classmethod
    def _safetensors_only(cls, v: str) -> str:
        suffix = PurePosixPath(_uri_path(v).replace("\\", "/")).suffix.lower()
        if suffix != ".safetensors":
            raise ValueError(
                f"LoRA weights must be a .safetensors file (got {v!r}); "
                "pickle formats (.ckpt, .bin, .pt) are refused"
            )
        scheme = urlparse(v).scheme.lower()
        if _has_scheme(v) and scheme not in ("file", "store"):
            # Local files, or the blob store's content-addressed adapters (store://loras/...).
            raise ValueError(
                "LoRA weights must be a local file (a path or file://) or store://, "
                f"not {scheme}:// ({v!r})"
            )
        return v

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha_pin(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _SHA_RE.match(v.strip().lower()):
            # A digits-only pin is read by YAML as a number, leading zeros lost: ask for quotes.
            raise ValueError(
                "must be the 64 hex digit sha256 of the .safetensors file (quoted in YAML)"
            )
        return v.strip().lower()

    @field_validator("trigger_word")
    @classmethod
    def _trigger(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None
        return v.strip() if v else v


class OutputSpec(_Model):
    """The published image's size apart from the model's ("hires fix"). The scene is made at
    the template's own (the model's native) size, upscaled to this one (``lanczos``: the
    decoded pixels; ``latent``: the latents) and refined by a low-strength img2img pass of
    the same model, with tiled VAE decode/encode. Give ``width`` and ``height``, or
    ``long_side`` (the native aspect kept, each side rounded to a multiple of 8)."""

    width: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    height: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    long_side: int | None = Field(default=None, ge=64, le=4096)
    # How far the img2img pass may move the upscaled scene (0: not at all, 1: a new image).
    strength: float = Field(default=0.35, gt=0.0, le=1.0)
    # The img2img pass's scheduler steps; diffusers runs about strength x steps of them.
    steps: int = Field(default=20, ge=1, le=500)
    upscale: Literal["lanczos", "latent"] = "lanczos"

    @model_validator(mode="after")
    def _one_size(self) -> OutputSpec:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or long_side")
        if self.width is not None and self.long_side is not None:
            raise ValueError("give either width and height or long_side, not both")
        if self.width is None and self.long_side is None:
            raise ValueError("give width and height, or long_side")
        return self

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The output size for a native ``width`` x ``height``."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        assert self.long_side is not None  # the validator asks for one of the two
        scale = self.long_side / max(width, height)
        return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)

    def resolved(self, width: int, height: int) -> HiresSpec:
        w, h = self.size(width, height)
        return HiresSpec(w, h, float(self.strength), self.steps, self.upscale)


class PresetSpec(_Model):
    width: int = Field(default=512, ge=8, le=4096, multiple_of=8)
    height: int = Field(default=512, ge=8, le=4096, multiple_of=8)
    steps: int = Field(default=30, ge=1, le=500)
    guidance: float = Field(default=7.0, ge=0.0, le=50.0)
    scheduler: str = "dpmpp_2m"
    # The output size apart from the model's (None: the images are width x height).
    output: OutputSpec | None = None

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        return _check_scheduler(v)


def _check_scheduler(v: str) -> str:
    if v not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {v!r} (known: {', '.join(sorted(SCHEDULERS))})")
    return v


# Presets as in common SD workflows; a brand's own ``presets`` add to or override these.
BUILTIN_PRESETS: dict[str, PresetSpec] = {
    "sd15": PresetSpec(width=512, height=512, steps=30, guidance=7.5, scheduler="dpmpp_2m"),
    "sd15_portrait": PresetSpec(width=512, height=768, steps=30, guidance=7.5),
    "sd15_landscape": PresetSpec(width=768, height=512, steps=30, guidance=7.5),
    "sdxl": PresetSpec(
        width=1024, height=1024, steps=30, guidance=6.0, scheduler="dpmpp_2m_karras"
    ),
    "sdxl_portrait": PresetSpec(
        width=832, height=1216, steps=30, guidance=6.0, scheduler="dpmpp_2m_karras"
    ),
    "sdxl_landscape": PresetSpec(
        width=1216, height=832, steps=30, guidance=6.0, scheduler="dpmpp_2m_karras"
    ),
    "turbo": PresetSpec(width=512, height=512, steps=1, guidance=0.0, scheduler="euler_a"),
    # The offline tiny preset: random weights, noise out. Small and fast for tests and demos.
    "tiny_fast": PresetSpec(width=64, height=64, steps=4, guidance=5.0, scheduler="euler"),
}


class PlacementConfig(_Model):
    """Where a packshot template puts the product on the canvas (``pipeline.packshot``)."""

    # The product's bounding box (longer side) as a fraction of the canvas.
    scale: float = Field(default=0.6, ge=0.05, le=1.0)
    anchor: Literal["center", "bottom"] = "center"
    margin: float = Field(default=0.05, ge=0.0, le=0.4)  # free on every side, canvas fraction
    floor_margin: float = Field(default=0.08, ge=0.0, le=0.4)  # bottom anchor: gap below
    shadow: Literal["none", "contact", "drop"] = "none"
    shadow_opacity: float = Field(default=0.45, ge=0.0, le=1.0)
    seam_px: int = Field(default=3, ge=0, le=32)  # band inside the edge the model may repaint

    def to_spec(self) -> PlacementSpec:
        from pipeline.packshot.placement import PlacementSpec

        return PlacementSpec(**self.model_dump())


class SlotRules(_Model):
    """What the slot a template fills demands of the final image (a marketplace main image:
    pure white background, the product filling 85 % of the frame, at least 1000 px, square).
    The gate checks each on the final file (``pipeline.gate.channel_rules``); a shot that
    breaks one is rejected with the rule named. Not part of the template digest: the rules
    judge an image, they do not change how it is made."""

    # Every pixel outside the product is RGB 255 (within ``white_tolerance`` levels).
    white_background: bool = False
    # How far below 255 a background channel may be: 0 is pure white. The invisible
    # watermark darkens some white blocks by ~2 levels, and JPEG rings near the product.
    white_tolerance: int = Field(default=0, ge=0, le=64)
    # The product's box, along its longer extent, as a fraction of the frame's side.
    min_product_share: float | None = Field(default=None, gt=0.0, le=1.0)
    min_long_side: int | None = Field(default=None, ge=1, le=MAX_RULE_SIDE)
    aspect: str | None = None  # "W:H", e.g. "1:1"

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, v: str | None) -> str | None:
        if v is not None and not _ASPECT_RE.match(v):
            raise ValueError(f'must be "W:H" with whole numbers, e.g. "1:1" or "4:5" (got {v!r})')
        return v

    def aspect_ratio(self) -> tuple[int, int] | None:
        if self.aspect is None:
            return None
        w, _, h = self.aspect.partition(":")
        return int(w), int(h)


# Which of a product's images a packshot template uses: the variant's own image, the first
# (Image Position 1), or position N (1-based).
ImageChoice = Literal["variant", "first"] | int


class TemplateSpec(_Model):
    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    description: str | None = None
    preset: str | None = None
    width: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)
    height: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)
    steps: int | None = Field(default=None, ge=1, le=500)
    guidance: float | None = Field(default=None, ge=0.0, le=50.0)
    scheduler: str | None = None
    # LoRA name -> weight; None means every brand LoRA at its default weight, {} means none.
    loras: dict[str, float] | None = None
    # "text": text-to-image (the default). "packshot": the catalog's own product image, cut
    # out and placed, with only the scene around it generated (inpainting).
    source: Literal["text", "packshot"] = "text"
    image: ImageChoice = "variant"
    placement: PlacementConfig | None = None
    # Pick 1 of N: planning makes this many shots per slot, each with its own seed; a
    # reviewer picks one and the others are rejected as "not picked".
    candidates: int = Field(default=1, ge=1, le=8)
    # The slot's rules the gate checks on the final image (None: none).
    rules: SlotRules | None = None
    # The output size apart from the model's; overrides the preset's (None: the preset's).
    output: OutputSpec | None = None

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str | None) -> str | None:
        return None if v is None else _check_scheduler(v)

    @field_validator("loras")
    @classmethod
    def _lora_weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for name, weight in (v or {}).items():
            if not -LORA_WEIGHT_MAX <= weight <= LORA_WEIGHT_MAX:  # NaN fails this too
                raise ValueError(
                    f"LoRA {name!r}: weight must be a finite number in "
                    f"[{-LORA_WEIGHT_MAX:g}, {LORA_WEIGHT_MAX:g}], not {weight!r}"
                )
        return v

    @field_validator("loras", mode="before")
    @classmethod
    def _lora_weights_not_bool(cls, v: Any) -> Any:
        if isinstance(v, dict) and any(isinstance(w, bool) for w in v.values()):
            raise ValueError("LoRA weights must be numbers, not true/false")
        return v

    @field_validator("image", mode="before")
    @classmethod
    def _image_choice(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and v > MAX_IMAGE_POSITION:
            raise ValueError(f"an image position is at most {MAX_IMAGE_POSITION}")
        if isinstance(v, bool) or (isinstance(v, int) and v < 1):
            raise ValueError('must be "variant", "first" or an image position (1, 2, ...)')
        if isinstance(v, str) and v not in ("variant", "first"):
            raise ValueError(f'must be "variant", "first" or an image position, not {v!r}')
        return v

    def resolved_placement(self) -> PlacementConfig | None:
        """The placement a packshot template uses (the defaults when it gives none)."""
        if self.source != "packshot":
            return None
        return self.placement or PlacementConfig()


class LoraValidationPrompt(_Model):
    """A prompt rendered with fixed seeds, with and without a newly trained adapter."""

    prompt: str = Field(min_length=1, max_length=2000)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


class CompetitorSpec(_Model):
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    logos: list[str] = Field(default_factory=list)


class SafetyConcept(_Model):
    name: str
    prompt: str
    threshold: float = Field(ge=-1.0, le=1.0)


class OpenNsfwPolicy(_Model):
    """The learned Open-NSFW classifier as a second safety signal (``pipeline.gate.nsfw``):
    an image scoring at or above ``threshold`` (its P(NSFW)) is rejected."""

    threshold: float = Field(default=0.8, ge=0.0, le=1.0)


class SafetyPolicy(_Model):
    version: str = "1"
    concepts: list[SafetyConcept] = Field(default_factory=list)
    # Optional: ``open_nsfw: {threshold: 0.8}`` adds the classifier; absent, CLIP alone.
    open_nsfw: OpenNsfwPolicy | None = None
    competitor_threshold: float = Field(default=0.3, ge=-1.0, le=1.0)
    logo_threshold: float = Field(default=0.85, ge=-1.0, le=1.0)
    product_match_min: float = Field(default=0.15, ge=-1.0, le=1.0)


MAX_REJECT_REASONS = 30
MAX_REASON_CHARS = 120


class ReviewSpec(_Model):
    """How this brand is reviewed in the browser."""

    # The reject reasons the web picker offers (free text stays possible); empty: the app's.
    reject_reasons: list[str] = Field(default_factory=list, max_length=MAX_REJECT_REASONS)

    @field_validator("reject_reasons")
    @classmethod
    def _reasons(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for i, raw in enumerate(v):
            text = " ".join(raw.split())  # one line: tabs/newlines would break the picker
            if not text:
                raise ValueError(f"reason {i + 1} is empty")
            if len(text) > MAX_REASON_CHARS:
                raise ValueError(f"reason {i + 1} is over {MAX_REASON_CHARS} characters")
            if not text.isprintable():
                raise ValueError(f"reason {i + 1} holds control characters")
            if text.casefold() in (o.casefold() for o in out):
                raise ValueError(f"reason {i + 1} ({text!r}) is listed twice")
            out.append(text)
        return out


@dataclass(frozen=True)
class ResolvedTemplate:
    """A template with its preset applied and its LoRAs resolved: what a shot is built from."""

    name: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    adapters: tuple[AdapterRef, ...]
    source: str = "text"  # text | packshot
    image: str | int = "variant"  # packshot: variant | first | position N
    placement: dict[str, Any] | None = None  # packshot: PlacementConfig fields
    # Shots per slot (pick 1 of N). Not part of the digest: each candidate's own seed is
    # recorded on its shot, and the definition of each image is unchanged.
    candidates: int = 1
    # The output size and second pass (HiresSpec JSON); None: the native size, one pass.
    output: dict[str, Any] | None = None

    @property
    def hires(self) -> HiresSpec | None:
        return HiresSpec.from_json(self.output)

    @property
    def output_size(self) -> tuple[int, int]:
        """The published image's size: the output size, else the native one."""
        h = self.hires
        return (self.width, self.height) if h is None else (h.width, h.height)

    @property
    def is_packshot(self) -> bool:
        return self.source == "packshot"

    def placement_spec(self) -> PlacementSpec | None:
        return None if self.placement is None else PlacementConfig(**self.placement).to_spec()

    def definition(self) -> dict[str, Any]:
        """The normalized definition the template digest is taken over.

        Packshot fields are added only for packshot templates, so a text template's digest
        is what it was before packshots existed.
        """
        out = self._text_definition()
        if self.is_packshot:
            out.update(source=self.source, image=self.image, placement=self.placement)
        if self.output is not None:  # only when set: a native template's digest is unchanged
            out["output"] = dict(self.output)
        return out

    def _text_definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": float(self.guidance),
            "scheduler": self.scheduler,
            "adapters": [
                {"name": a.name, "sha256": a.sha256, "weight": float(a.weight)}
                for a in self.adapters
            ],
        }

    def digest(self) -> str:
        canonical = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ControlNetSpec(_Model):
    """A local ControlNet for the brand's packshot templates: the scene is conditioned on the
    canny edges of the placed packshot (pipeline/generate/controlnet.py)."""

    # A local .safetensors file (diffusers layout: its config.json beside it; else diffusers'
    # single-file loader), relative to the brand file, or "tiny-controlnet" (the offline
    # preset's).
    path: str
    sha256: str | None = None  # the file's pin; planning records the sha256 either way
    kind: Literal["canny"] = "canny"  # depth would need a depth estimator: none ships here
    scale: float = Field(default=0.8, ge=0.0, le=2.0)  # controlnet_conditioning_scale
    canny_low: int = Field(default=100, ge=0, le=255)
    canny_high: int = Field(default=200, ge=0, le=255)

    @field_validator("path")
    @classmethod
    def _local_safetensors(cls, v: str) -> str:
        if v == "tiny-controlnet":
            return v
        if _has_scheme(v):
            raise ValueError(f"ControlNet weights must be a local file, not a URI ({v!r})")
        if PurePosixPath(v.replace("\\", "/")).suffix.lower() != ".safetensors":
            raise ValueError(
                f"ControlNet weights must be a .safetensors file (got {v!r}); "
                "pickle formats (.ckpt, .bin, .pt) are refused"
            )
        return v

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha_pin(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, str) or not _SHA_RE.match(v.strip().lower()):
            raise ValueError(
                "must be the 64 hex digit sha256 of the .safetensors file (quoted in YAML)"
            )
        return v.strip().lower()

    @model_validator(mode="after")
    def _thresholds(self) -> ControlNetSpec:
        if self.canny_low > self.canny_high:
            raise ValueError("canny_low must not exceed canny_high")
        return self

    def params(self) -> dict[str, Any]:
        """The generation parameters a shot records beside the file and its sha256."""
        return {
            "kind": self.kind,
            "scale": float(self.scale),
            "canny_low": int(self.canny_low),
            "canny_high": int(self.canny_high),
        }


# --- delivery channels ---------------------------------------------------------------
# Where approved images go (``channels:`` in the brand file): each channel names the
# renditions it takes, which templates feed which image slot, and its alt text. Publishing
# writes every channel's renditions (pipeline/delivery/renditions.py); exports link the
# channel's first rendition.

# A watermark needs at least 256 px per side (pipeline/gate/watermark.py: MIN_PIXELS).
MIN_RENDITION_SIDE = 256
MAX_RENDITION_SIDE = 8192
CHANNEL_KINDS = ("shopify", "gmc")  # other channel names (amazon, social...) are generic
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


class RenditionSpec(_Model):
    """One file a channel takes: its size, aspect policy, format and size cap."""

    name: str = Field(pattern=NAME_RE)
    format: Literal["jpeg", "webp", "png"] = "jpeg"
    quality: int = Field(default=90, ge=1, le=100)  # JPEG/WebP; PNG is lossless
    # Either the longest side, or an exact width x height, or neither (the master's size).
    longest_side: int | None = Field(default=None, ge=MIN_RENDITION_SIDE, le=MAX_RENDITION_SIDE)
    width: int | None = Field(default=None, ge=MIN_RENDITION_SIDE, le=MAX_RENDITION_SIDE)
    height: int | None = Field(default=None, ge=MIN_RENDITION_SIDE, le=MAX_RENDITION_SIDE)
    aspect: str | None = None  # "W:H", e.g. "1:1" or "4:5"; None keeps the master's aspect
    fit: Literal["crop", "pad"] = "pad"  # reach ``aspect`` by a centre crop or by padding
    background: str = "#ffffff"  # the padding colour
    max_bytes: int | None = Field(default=None, ge=1024)  # lossy formats step quality down

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, v: str | None) -> str | None:
        if v is not None and not _ASPECT_RE.match(v):
            raise ValueError(f'must be "W:H" with whole numbers, e.g. "1:1" or "4:5" (got {v!r})')
        return v

    @field_validator("background")
    @classmethod
    def _color(cls, v: str) -> str:
        if not _COLOR_RE.match(v):
            raise ValueError(f'must be a "#rrggbb" colour (got {v!r})')
        return v.lower()

    @model_validator(mode="after")
    def _size(self) -> RenditionSpec:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or longest_side")
        if self.width is not None and self.longest_side is not None:
            raise ValueError("give either width and height or longest_side, not both")
        if self.width is not None and self.aspect is not None:
            raise ValueError("width and height already fix the aspect: drop aspect")
        return self


class ChannelSlots(_Model):
    """Which templates' images fill which slot of a product page or feed item."""

    main: list[str] = Field(default_factory=list)  # may replace the product's own photo
    additional: list[str] = Field(default_factory=list)
    lifestyle: list[str] = Field(default_factory=list)

    def slot_of(self, template: str) -> str | None:
        for slot in ("main", "additional", "lifestyle"):
            if template in getattr(self, slot):
                return slot
        return None


class ChannelSpec(_Model):
    renditions: list[RenditionSpec] = Field(min_length=1)
    slots: ChannelSlots = Field(default_factory=ChannelSlots)
    # Sandboxed Jinja over product/variant/brand, rendered to one line of <= 512 characters.
    alt_text: str = "{{ product.title }}"
    # Shopify: generated images go before the catalog's own (default: after them).
    generated_first: bool = False
    # GMC: the offer id template (default: the variant SKU, else the product key).
    offer_id: str | None = None
    # Kept fresh by beat (SHOTLINE_FEED_INTERVAL_S): after new publications, recalls or
    # imports the blob store's feeds/<brand>/<channel>.<feed> is written again. csv: a
    # Shopify product CSV; tsv or xml: a Merchant Center feed. Unset: export by hand only.
    feed: Literal["csv", "tsv", "xml"] | None = None

    @field_validator("alt_text", "offer_id")
    @classmethod
    def _renders(cls, v: str | None) -> str | None:
        from pipeline.delivery.alt_text import alt_text_problem  # sandbox only: no cycle

        problem = None if v is None else alt_text_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    def feed_rendition(self) -> RenditionSpec:
        """The rendition exports link (the first one listed)."""
        return self.renditions[0]


def channel_problems(
    channels: dict[str, ChannelSpec] | None, templates: Any
) -> list[tuple[Loc, str]]:
    """Channel names, duplicate rendition names and slots naming unknown templates."""
    out: list[tuple[Loc, str]] = []
    for cname, spec in (channels or {}).items():
        if not re.match(NAME_RE, cname):
            out.append(
                (("channels", cname), "channel names are lowercase letters, digits, _ and -")
            )
        seen: set[str] = set()
        for i, r in enumerate(spec.renditions):
            if r.name in seen:
                out.append((("channels", cname, "renditions", i, "name"), f"duplicate {r.name!r}"))
            seen.add(r.name)
        for slot in ("main", "additional", "lifestyle"):
            for i, tname in enumerate(getattr(spec.slots, slot)):
                if tname not in templates:
                    known = ", ".join(sorted(templates)) or "none"
                    loc: Loc = ("channels", cname, "slots", slot, i)
                    out.append((loc, f"unknown template {tname!r} (known: {known})"))
    return out


class BrandConfig(_Model):
    name: str = Field(pattern=NAME_RE)
    display_name: str | None = None
    base_model: str = "tiny"
    # A 9-channel inpainting checkpoint for packshot templates (a repo id, folder,
    # .safetensors, or "tiny-inpaint"); unset: inpaint with base_model's own modules.
    inpaint_model: str | None = None
    # An optional ControlNet for packshot templates (the placed packshot's canny edges).
    controlnet: ControlNetSpec | None = None
    loras: list[LoraSpec] = Field(default_factory=list)
    presets: dict[str, PresetSpec] = Field(default_factory=dict)
    templates: dict[str, TemplateSpec] = Field(default_factory=dict)
    visual_options: list[str] = Field(
        default_factory=lambda: ["Color", "Colour", "Material", "Pattern"]
    )
    competitors: list[CompetitorSpec] = Field(default_factory=list)
    lora_validation: list[LoraValidationPrompt] = Field(default_factory=list)
    blocked_terms: list[str] = Field(default_factory=list)
    # Who may approve this brand's images (database logins on Postgres, OS logins on SQLite,
    # or free names where SHOTLINE_REVIEW_FREE_NAMES allows them). Empty: nobody may approve.
    reviewers: list[str] = Field(default_factory=list)
    # The web review's settings (reject reasons); unset: the app's defaults.
    review: ReviewSpec | None = None
    safety: SafetyPolicy = Field(default_factory=SafetyPolicy)
    # For generic CSVs: our field name -> the CSV column that holds it.
    column_map: dict[str, str] = Field(default_factory=dict)
    # Delivery destinations (shopify, gmc, amazon...): renditions, slots, alt text.
    channels: dict[str, ChannelSpec] | None = None

    # Set by load_brand: where relative LoRA/logo paths resolve from. Not part of the digest.
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("inpaint_model")
    @classmethod
    def _no_pickle_inpaint(cls, v: str | None) -> str | None:
        return None if v is None else _model_string(v)

    @field_validator("base_model")
    @classmethod
    def _no_pickle_model(cls, v: str) -> str:
        return _model_string(v)

    # --- derived views --------------------------------------------------------------

    @property
    def label(self) -> str:
        return self.display_name or self.name

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"source_path"})
        # Optional fields (packshot, review) unset are left out, so a brand that uses none of them
        # keeps the digest it had before they existed (no spurious new brand version).
        for key in ("inpaint_model", "controlnet", "channels", "review"):
            if data.get(key) is None:
                data.pop(key, None)
        for preset in data.get("presets", {}).values():
            if preset.get("output") is None:
                preset.pop("output", None)
        for tmpl in data.get("templates", {}).values():
            for optional in ("rules", "output"):  # unset: the digest from before they existed
                if tmpl.get(optional) is None:
                    tmpl.pop(optional, None)
            if tmpl.get("source") == "text" and tmpl.get("placement") is None:
                tmpl.pop("source", None)
                tmpl.pop("placement", None)
                if tmpl.get("image") == "variant":
                    tmpl.pop("image", None)
        return data

    def digest(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def resolve_path(self, p: str) -> Path:
        path = Path(p)
        if path.is_absolute() or self.source_path is None:
            return path
        return (self.source_path.parent / path).resolve()

    def resolve_uri(self, p: str) -> str:
        """A URI stays as written; a plain path becomes absolute (relative to the brand file)."""
        return p if _has_scheme(p) else str(self.resolve_path(p))

    def resolved_base_model(self) -> str:
        """``base_model`` with a relative local path made absolute; repo ids stay as written."""
        return self._resolved_model(self.base_model)

    def resolved_controlnet_path(self) -> str | None:
        """The ControlNet file, absolute (relative paths are relative to the brand file)."""
        cn = self.controlnet
        if cn is None or cn.path == "tiny-controlnet":
            return None if cn is None else cn.path
        return str(self.resolve_path(str(Path(cn.path).expanduser())))

    def resolved_inpaint_model(self) -> str | None:
        """``inpaint_model`` resolved like ``base_model`` (None: inpaint with base_model)."""
        return None if self.inpaint_model is None else self._resolved_model(self.inpaint_model)

    def _resolved_model(self, m: str) -> str:
        local = m.startswith(("./", "../", "~")) or m.lower().endswith(".safetensors")
        if local and not _has_scheme(m) and not Path(m).is_absolute():
            return str(self.resolve_path(str(Path(m).expanduser())))
        return m

    def all_presets(self) -> dict[str, PresetSpec]:
        return {**BUILTIN_PRESETS, **self.presets}

    def lora(self, name: str) -> LoraSpec:
        for spec in self.loras:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def adapters_for(self, template: str) -> tuple[AdapterRef, ...]:
        """The LoRAs ``template`` applies, at its weights, with pins and resolved URIs."""
        spec = self.templates[template]
        chosen = (
            [(s, s.weight) for s in self.loras]
            if spec.loras is None
            else [(self.lora(n), w) for n, w in spec.loras.items()]
        )
        return tuple(
            AdapterRef(
                name=s.name,
                sha256=s.sha256,
                weight=float(w),
                uri=self.resolve_uri(s.path),
                trigger_word=s.trigger_word,
            )
            for s, w in chosen
        )

    def resolve_template(self, name: str) -> ResolvedTemplate:
        """Template ``name`` with its preset applied: explicit fields win over the preset."""
        spec = self.templates[name]
        base = self.all_presets()[spec.preset] if spec.preset else PresetSpec()
        width = spec.width if spec.width is not None else base.width
        height = spec.height if spec.height is not None else base.height
        output = spec.output or base.output
        return ResolvedTemplate(
            name=name,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            width=width,
            height=height,
            steps=spec.steps if spec.steps is not None else base.steps,
            guidance=float(spec.guidance if spec.guidance is not None else base.guidance),
            scheduler=spec.scheduler or base.scheduler,
            adapters=self.adapters_for(name),
            source=spec.source,
            image=spec.image,
            placement=(p.model_dump() if (p := spec.resolved_placement()) else None),
            candidates=spec.candidates,
            output=None if output is None else output.resolved(width, height).to_json(),
        )

    def template_digest(self, name: str) -> str:
        return self.resolve_template(name).digest()

    # --- whole-file checks ----------------------------------------------------------

    def problems(self) -> list[tuple[Loc, str]]:
        """Problems pydantic cannot see field by field, as (field path, message)."""
        out: list[tuple[Loc, str]] = []
        if not self.templates:
            out.append((("templates",), "at least one template is required"))
        seen: dict[str, int] = {}
        for i, lspec in enumerate(self.loras):
            if lspec.name in seen:
                out.append(
                    (
                        ("loras", i, "name"),
                        f"duplicate LoRA name {lspec.name!r} (see loras[{seen[lspec.name]}])",
                    )
                )
            seen.setdefault(lspec.name, i)
        presets = self.all_presets()
        for tname, spec in self.templates.items():
            if not re.match(NAME_RE, tname):
                out.append(
                    (("templates", tname), "template names are lowercase letters, digits, _ and -")
                )
            if spec.preset is not None and spec.preset not in presets:
                out.append(
                    (
                        ("templates", tname, "preset"),
                        f"unknown preset {spec.preset!r} (known: {', '.join(sorted(presets))})",
                    )
                )
            out += _packshot_problems(tname, spec)
            out += self._rule_problems(tname)
            out += self._output_problems(tname)
            for lname in spec.loras or {}:
                if lname not in seen:
                    known = ", ".join(sorted(seen)) or "none defined"
                    out.append(
                        (
                            ("templates", tname, "loras", lname),
                            f"unknown LoRA {lname!r} (known: {known})",
                        )
                    )
        folded: dict[str, int] = {}
        for i, opt in enumerate(self.visual_options):
            if not opt.strip():
                out.append((("visual_options", i), "must not be empty"))
            elif opt.casefold() in folded:
                out.append((("visual_options", i), f"duplicate option {opt!r}"))
            folded.setdefault(opt.casefold(), i)
        out += self._term_problems()
        out += channel_problems(self.channels, self.templates)
        return out

    def _rule_problems(self, tname: str) -> list[tuple[Loc, str]]:
        """Slot rules no shot of the template could meet (its size, aspect or placement
        rule them out): every shot would be rejected."""
        rules = self.templates[tname].rules
        spec = self.templates[tname]
        if rules is None or (spec.preset is not None and spec.preset not in self.all_presets()):
            return []
        # The size as resolve_template gives it (which would raise on an unknown LoRA).
        base = self.all_presets()[spec.preset] if spec.preset else PresetSpec()
        width = spec.width if spec.width is not None else base.width
        height = spec.height if spec.height is not None else base.height
        output = spec.output or base.output
        if output is not None:  # the rules judge the published image: the output size
            width, height = output.size(width, height)
        loc: Loc = ("templates", tname, "rules")
        out: list[tuple[Loc, str]] = []
        size = f"{width}x{height}"
        if rules.min_long_side is not None and max(width, height) < rules.min_long_side:
            msg = f"min_long_side {rules.min_long_side} but the template makes {size} images"
            out.append(((*loc, "min_long_side"), msg))
        ratio = rules.aspect_ratio()
        if ratio is not None and abs(width * ratio[1] - height * ratio[0]) > max(ratio):
            out.append(((*loc, "aspect"), f"aspect {rules.aspect} but the template makes {size}"))
        placement = spec.resolved_placement()
        if rules.min_product_share is not None and placement is not None:
            # The product's box stays inside the margins; on a square canvas its longer side
            # is at most ``scale`` of the frame.
            reach = 1 - 2 * placement.margin
            if width == height:
                reach = min(reach, placement.scale)
            if rules.min_product_share > reach + 1e-9:
                msg = (
                    f"min_product_share {rules.min_product_share:g} but the placement "
                    f"(scale {placement.scale:g}, margin {placement.margin:g}) fills at most "
                    f"{reach:g} of the frame"
                )
                out.append(((*loc, "min_product_share"), msg))
        return out

    def _output_problems(self, tname: str) -> list[tuple[Loc, str]]:
        """An output size the second pass cannot reach: smaller than the native size (the
        pass upscales), or a latent upscale for a packshot (its hires input is the scene with
        the product placed at the output size: pixels)."""
        spec = self.templates[tname]
        if spec.preset is not None and spec.preset not in self.all_presets():
            return []
        base = self.all_presets()[spec.preset] if spec.preset else PresetSpec()
        output = spec.output or base.output
        if output is None:
            return []
        where = "output" if spec.output is not None else f"preset {spec.preset}"
        loc: Loc = ("templates", tname, "output")
        width = spec.width if spec.width is not None else base.width
        height = spec.height if spec.height is not None else base.height
        w, h = output.size(width, height)
        out: list[tuple[Loc, str]] = []
        if w < width or h < height:
            msg = f"{where} {w}x{h} is smaller than the template's native size {width}x{height}"
            out.append((loc, msg))
        if spec.source == "packshot" and output.upscale == "latent":
            msg = f'{where}: a packshot template upscales in pixels (upscale: "lanczos")'
            out.append(((*loc, "upscale"), msg))
        return out

    def _term_problems(self) -> list[tuple[Loc, str]]:
        """Terms the sanitizer would match as the empty string (it then cuts between every
        character: ``C++`` became ``C+ +``): blank, or only invisible characters."""
        out: list[tuple[Loc, str]] = []

        def check(loc: Loc, term: str) -> None:
            if not term.strip():
                out.append((loc, "must not be empty"))
            elif not normalize_text(term).split():
                out.append((loc, f"{term!r} is empty once invisible characters are removed"))

        for i, term in enumerate(self.blocked_terms):
            check(("blocked_terms", i), term)
        for i, comp in enumerate(self.competitors):
            check(("competitors", i, "name"), comp.name)
            for j, alias in enumerate(comp.aliases):
                check(("competitors", i, "aliases", j), alias)
        return out

    def file_warnings(self) -> list[tuple[Loc, str]]:
        """Referenced local files that are missing (they may be provisioned later)."""
        out: list[tuple[Loc, str]] = []
        for i, spec in enumerate(self.loras):
            if not _has_scheme(spec.path) and not self.resolve_path(spec.path).is_file():
                out.append(
                    (("loras", i, "path"), f"file not found: {self.resolve_path(spec.path)}")
                )
        for i, comp in enumerate(self.competitors):
            for j, logo in enumerate(comp.logos):
                if not _has_scheme(logo) and not self.resolve_path(logo).is_file():
                    out.append(
                        (
                            ("competitors", i, "logos", j),
                            f"file not found: {self.resolve_path(logo)}",
                        )
                    )
        return out

    def pin_problems(self, hashes: bool = True) -> list[tuple[Loc, str]]:
        """Local weight files that would fail at run time: not well-formed safetensors (a
        pickle renamed ``.safetensors``, junk), or a LoRA whose sha256 differs from its pin.
        Reads each LoRA file once, and a checkpoint's header only; ``hashes=False`` skips the
        sha256 (the slow part) but never the header check."""
        out: list[tuple[Loc, str]] = []
        for key, model in (
            ("base_model", self.resolved_base_model()),
            ("inpaint_model", self.resolved_inpaint_model()),
        ):
            if model and model.lower().endswith(".safetensors") and not _has_scheme(model):
                out += _header_problem((key,), Path(model).expanduser())
        for i, spec in enumerate(self.loras):
            path = None if _has_scheme(spec.path) else self.resolve_path(spec.path)
            if path is None or not path.is_file():
                continue
            out += _header_problem(("loras", i, "path"), path)
            if not hashes:
                continue
            try:
                actual = sha256_file(path)
            except InputFileError as exc:
                out.append((("loras", i, "path"), exc.reason))
                continue
            if actual != spec.sha256:
                msg = f"pin mismatch: {path.name} has sha256 {actual}, pinned {spec.sha256}"
                out.append((("loras", i, "sha256"), msg))
        return out


def _model_string(v: str) -> str:
    if not v.strip():
        raise ValueError("must name a diffusers repo id, a local folder, a .safetensors file")
    if _uri_path(v).lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(
            f"{v!r} is a pickle format; use a .safetensors checkpoint or a diffusers folder"
        )
    return v


def _packshot_problems(tname: str, spec: TemplateSpec) -> list[tuple[Loc, str]]:
    """Packshot-only fields on a text template: a mistake (the template would ignore them)."""
    if spec.source == "packshot":
        return []
    return [
        (("templates", tname, f), 'only for packshot templates (add "source: packshot")')
        for f in ("image", "placement")
        if f in spec.model_fields_set
    ]


def _header_problem(loc: Loc, path: Path) -> list[tuple[Loc, str]]:
    if not path.exists():
        return []  # a missing file is a warning (it may be provisioned later)
    try:
        check_safetensors(path, path.name)
    except InputFileError as exc:
        return [(loc, exc.reason)]
    return []


def _clean_msg(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based YAML line of the deepest node along ``loc`` (None when unknown)."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def located_problem(root: yaml.Node | None, loc: Sequence[str | int], msg: str) -> BrandProblem:
    return BrandProblem(field=format_loc(loc), message=_clean_msg(msg), line=_line_of(root, loc))
