"""Value types that cross stage boundaries. Plain frozen dataclasses: JSON-able, no ORM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from pipeline.brand.config import BrandConfig
    from pipeline.failures import FailureKind

Decision = Literal["rejected", "pending_review"]


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter as recorded on a shot: pinned by sha256, applied at ``weight``."""

    name: str
    sha256: str
    weight: float
    uri: str
    trigger_word: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AdapterRef:
        return cls(
            name=str(data["name"]),
            sha256=str(data["sha256"]),
            weight=float(data["weight"]),
            uri=str(data["uri"]),
            trigger_word=data.get("trigger_word"),
        )


UpscaleMethod = Literal["lanczos", "latent"]
UPSCALE_METHODS: tuple[str, ...] = ("lanczos", "latent")


@dataclass(frozen=True)
class HiresSpec:
    """A shot's output size apart from the model's native size, and how it gets there: the
    scene is generated at the shot's ``width`` x ``height``, upscaled (``lanczos``: the
    decoded pixels, PIL Lanczos; ``latent``: the latents, bicubic) to ``width`` x ``height``
    here, then refined by an img2img pass of the same model at ``strength`` over ``steps``
    scheduler steps (diffusers runs about ``strength * steps`` of them). Recorded on the
    shot (``shots.hires``), so ``reproduce`` runs the same second pass."""

    width: int
    height: int
    strength: float = 0.35
    steps: int = 20
    upscale: UpscaleMethod = "lanczos"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> HiresSpec | None:
        """The spec a shot recorded, or None (``{}``: no second pass, the native size)."""
        if not data:
            return None
        upscale = str(data.get("upscale") or "lanczos")
        if upscale not in UPSCALE_METHODS:
            raise ValueError(f"unknown upscale method {upscale!r}")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            strength=float(data.get("strength", 0.35)),
            steps=int(data.get("steps", 20)),
            upscale=upscale,  # type: ignore[arg-type]
        )

    def key(self) -> tuple[Any, ...]:
        return (self.width, self.height, self.strength, self.steps, self.upscale)


@dataclass(frozen=True)
class ShotParams:
    """Everything the generator needs for one image. Built from a ``shots`` row."""

    shot_id: int
    prompt: str
    negative_prompt: str
    seed: int
    model_id: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    adapters: tuple[AdapterRef, ...] = field(default_factory=tuple)
    # The output size and the second pass that reaches it; None: the native size, one pass.
    hires: HiresSpec | None = None

    def batch_key(self) -> tuple[Any, ...]:
        """Shots with equal keys can share one GPU batch."""
        key: tuple[Any, ...] = (
            self.model_id,
            tuple((a.name, a.sha256, a.weight) for a in self.adapters),
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.scheduler,
        )
        # Appended only when set: a native shot's key is what it was before hires existed.
        return key if self.hires is None else (*key, self.hires.key())

    @property
    def output_size(self) -> tuple[int, int]:
        """The final image's (width, height): the hires size, else the native one."""
        if self.hires is None:
            return self.width, self.height
        return self.hires.width, self.hires.height


@dataclass
class GenerationOutput:
    """One generated image (or the reason there is none). ``error`` set means ``image`` is None."""

    shot_id: int
    image: Image.Image | None
    png: bytes | None
    sha256: str | None
    model_digest: str
    timings: dict[str, float]
    device: str
    library_versions: dict[str, str]
    batch_id: str
    error: str | None = None
    error_kind: FailureKind | None = None  # set with ``error`` where the stage knows it
    # ``image`` as a uint8 (3, H, W) tensor on the generating device, when the generator
    # decoded it there (the gate on the GPU host scores it without a copy); else None.
    pixels: Any = field(default=None, compare=False, repr=False)


# watermarks.method of a white_background slot's shot whose product is too small to carry
# the mark once its pure-white background is kept exact: published unmarked, and saying so.
WATERMARK_OMITTED_WHITE = "omitted-white-bg"


@dataclass(frozen=True)
class KeepPixels:
    """Pixels the final file must carry exactly: a packshot's product core, and for a shot
    whose slot demands a white background (``white_background``) the image's own pure-white
    pixels. The watermark is embedded in the rest of the image (the generated scene, the
    product), so the product's own pixels and the marketplace's RGB 255 background are
    published byte for byte."""

    rgb: np.ndarray | None = None  # (H, W, 3) uint8: the placed source on the canvas
    mask: np.ndarray | None = None  # (H, W) bool: where ``rgb`` must be kept (alpha 255)
    white: bool = False  # keep every pixel that is RGB 255 before the watermark at 255


@dataclass(frozen=True)
class FinalImage:
    """The file a reviewer sees and publish uploads: watermark, then XMP, then C2PA."""

    data: bytes
    content_type: str
    ext: str
    sha256: str
    payload: str
    method: str
    verified: bool
    bit_accuracy: float
    c2pa_signed: bool


@dataclass(frozen=True)
class GateItem:
    """One image for the gate to check, with the product text it must show."""

    shot_id: int
    image: Image.Image
    product_text: str
    # The same pixels as a uint8 (3, H, W) tensor where the generator still holds them on
    # its device (the GPU host's gate scores them there); None: score ``image``.
    pixels: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Score:
    """One check of the gate's, with its threshold (None: recorded, not a cut)."""

    name: str
    kind: str  # safety | competitor | logo | product_match | fidelity
    score: float
    threshold: float | None
    triggered: bool
    crop: int | None = None  # which crop scored highest (0 = the full image)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "score": float(self.score),
            "threshold": None if self.threshold is None else float(self.threshold),
            "triggered": bool(self.triggered),
        }
        if self.crop is not None:
            out["crop"] = int(self.crop)
        return out


@dataclass(frozen=True)
class FilterDecision:
    """The gate's verdict on one image: every score with its threshold, and the reasons."""

    decision: Decision
    scores: list[dict[str, Any]]  # ``Score.to_json()`` rows: what ``filter_results`` stores
    reasons: list[str]
    policy_version: str
    clip_model: str
    # The L2-normalised full-image CLIP feature (float32) the scores came from; kept as the
    # shot's embedding (catalog/embeddings.py). None where the gate computes none (fakes).
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("embedding")  # a vector, not JSON; stored on its own as float16 bytes
        return data


@dataclass(frozen=True)
class ProvenanceInfo:
    """What the final file's XMP (and C2PA manifest) says about where the image came from."""

    shot_id: int
    model_id: str
    model_digest: str | None
    loras: list[dict[str, Any]] = field(default_factory=list)  # {"name", "sha256", "weight"?}
    brand: str = ""
    sku: str = ""
    template: str = ""


# --- stage contracts: what the tasks call. The real stages and the test stand-ins
# (tasks/fakes.py) both implement them.


class ImageEncoder(Protocol):
    """CLIP's image tower, as the packshot fidelity check uses it."""

    def encode_images(self, images: list[Image.Image]) -> Any: ...


class Generator(Protocol):
    """Text (and later source image) to raw image, one ``torch.Generator`` per shot."""

    model_id: str
    architecture: str  # the batch table's key ("sd15", "sdxl", ...; "" for a stand-in)

    def inpainter(self) -> Any | None:
        """The inpainting pipeline on this generator's loaded modules
        (``pipeline.generate.inpaint.Inpainter``), or None for a stand-in without one: its
        packshot scenes are generated plainly and the product composited over them."""
        ...

    def generate(
        self, shots: Sequence[ShotParams], batch_id: str | None = None
    ) -> list[GenerationOutput]: ...


class Gate(Protocol):
    """CLIP checks on a batch, then watermark + provenance on each final file."""

    @property
    def clip_model(self) -> str: ...

    @property
    def image_encoder(self) -> ImageEncoder | None:
        """CLIP's image encoder (packshot fidelity records a similarity), or None."""
        ...

    def policy_for(self, brand: BrandConfig) -> Any:
        """The brand's policy, in whatever form ``check`` takes back."""
        ...

    def check(self, items: Sequence[GateItem], policy: Any) -> list[FilterDecision]: ...

    def finalize(
        self,
        shot_id: int,
        image: Image.Image,
        provenance: ProvenanceInfo,
        fmt: str | None = None,
        keep: KeepPixels | None = None,
    ) -> FinalImage: ...
