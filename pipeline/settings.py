"""The one settings object: ``SHOTLINE_*`` environment variables plus an optional ``.env``.

Built once at process start (CLI entry, worker init) and passed down; nothing in
``pipeline/`` reads the environment on its own. Importing this module switches the process's
Hugging Face hub access off (``force_hub_offline``): no model download, ever, whatever the
environment says.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _PydanticSettingsError

ENV_PREFIX = "SHOTLINE_"

# The variables huggingface_hub, transformers and diffusers read for "no network".
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def force_hub_offline() -> None:
    """Switch hub access off for this process, whatever the environment says.

    The hub libraries read ``HF_HUB_OFFLINE`` once, when first imported: the variable is set
    before that (this module is imported first), and the flag is set on the already
    imported library too, so no code path (diffusers' single-file loader retrying online
    included) can reach a hub. Called again by the model loaders."""
    for name in _OFFLINE_ENV:
        os.environ[name] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


force_hub_offline()


class SettingsInvalid(ValueError):
    """The environment (or ``.env``) holds a setting that does not parse: one line naming the
    variable, for the CLI to print instead of pydantic's multi-line report."""


def split_list(value: Any) -> Any:
    """A list setting from the environment: a JSON list (``["a", "b"]``) or plain
    comma-separated text (``127.0.0.1,10.0.0.0/8``), which is what people type."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list ({exc.msg} at column {exc.colno})") from None
    return [part.strip() for part in text.split(",") if part.strip()]


# A list setting that accepts JSON or comma-separated text (NoDecode: pydantic-settings would
# otherwise insist on JSON and fail with a traceback on plain text).
TextList = Annotated[list[str], NoDecode]
PathList = Annotated[list[Path], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHOTLINE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- data -----------------------------------------------------------------
    database_url: str = "sqlite:///./var/shotline.db"
    var_dir: Path = Path("./var")
    brands_dir: Path = Path("./samples/brands")

    # --- broker: unset means run in-process (Celery eager), the embedded default --
    broker_url: str | None = None
    result_backend: str | None = None
    # Must exceed the longest GPU batch, or Redis redelivers a batch that is still running.
    visibility_timeout_s: int = 3 * 3600
    max_attempts: int = 3
    # Transient errors (DB connection, S3 5xx, broker) retry with backoff up to this many times.
    task_max_retries: int = 8
    task_retry_backoff_max_s: int = 30
    # Shots per gate/publish task: batching amortises CLIP and DB round trips.
    cpu_batch_size: int = 16
    # `shotline run` re-enqueues shots that made no progress for this long (lost messages).
    stall_timeout_s: float = 120.0

    # --- blob storage -------------------------------------------------------------
    blob_backend: Literal["local", "s3"] = "local"
    blob_root: Path = Path("./var/blobs")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "shotline"
    s3_prefix: str = ""
    # Public base URL of the store (a CDN or bucket website): export URLs are this + the
    # object key, stable for given bytes. Exports refuse to run without it.
    public_base_url: str | None = None
    # How often beat looks for brands whose channels name a ``feed`` and rewrites the feeds
    # that new publications, recalls or imports changed (0: never).
    feed_interval_s: float = Field(default=600.0, ge=0)

    # --- source images (packshots named by the catalog) ------------------------------
    # Local paths and file:// URLs are fetched only from under these folders.
    source_roots: PathList = Field(default_factory=lambda: [Path("./samples")])
    # Hosts (names or IPs) that may resolve to loopback/private/link-local addresses; all
    # other hosts must resolve to public addresses only (each redirect hop is re-checked).
    # An entry "host" allows every port of it; "host:port" (or "[v6]:port") only that port.
    source_allow_hosts: TextList = Field(default_factory=list)
    # Buckets catalog s3:// references may be read from (besides the buckets of
    # SHOTLINE_INGEST_SOURCES); any other bucket is refused before a request is made.
    source_s3_buckets: TextList = Field(default_factory=list)
    source_max_bytes: int = 25 * 1024 * 1024
    source_max_pixels: int = 6000 * 6000
    source_connect_timeout_s: float = 5.0
    source_read_timeout_s: float = 20.0
    # A whole download (every redirect hop and the body) ends by then, however slow the drip.
    source_total_timeout_s: float = 120.0
    source_max_redirects: int = 5
    # Downloads in flight at once per fetch task (threads: the work is network waits).
    source_fetch_concurrency: int = 4

    # --- generation ---------------------------------------------------------------
    # Overrides the brand's base_model when set (repo id, local folder, .safetensors or "tiny").
    model: str | None = None
    model_config_dir: Path | None = Field(
        default=None,
        # SHOTLINE_MODEL_CONFIG is the name the docs use; ``model_config`` itself is
        # pydantic's own attribute, so the field carries a suffix.
        validation_alias=AliasChoices(
            "model_config_dir", "SHOTLINE_MODEL_CONFIG", "SHOTLINE_MODEL_CONFIG_DIR"
        ),
        description=(
            "For a single-file .safetensors model (also read from SHOTLINE_MODEL_CONFIG): a "
            "local diffusers folder whose configs, tokenizers and scheduler describe it. "
            "Unset: the configs shipped for the family read from the checkpoint's keys "
            "(SD1.5, SD2.x 768-v, SDXL base, SDXL inpaint)."
        ),
    )
    model_cache_dir: Path = Path("./var/models")
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    fp8_storage: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    channels_last: bool = False
    compile_unet: bool = False
    fuse_qkv: bool = False
    batch_size: int = 4
    # Per-architecture batch sizes, most specific key first: "ARCH@WxH" then "ARCH" (ARCH is
    # sd, sdxl, or the pipeline class name in lower case), else batch_size. JSON in the
    # environment, e.g. SHOTLINE_BATCH_SIZES='{"sd@512x512": 8, "sdxl": 4}'. The measured
    # table comes from tests/benchmarks/gpu/run_all.sh (README "Throughput").
    batch_sizes: dict[str, int] = Field(default_factory=dict)
    # Encode each distinct prompt/negative once per batch (identical images, fewer encoder
    # calls); prompt_cache_size > 0 also keeps that many embeddings across batches (LRU).
    prompt_dedup: bool = True
    prompt_cache_size: int = 128
    lora_cache_size: int = 4
    # Bit-identical images whatever the batch (per-sample linear/conv): "auto" = on for CPU only,
    # since on CUDA it gives up the batching speed-up.
    batch_invariant: Literal["auto", "on", "off"] = "auto"
    # "module:callable" replacing pipeline.generate.generator.load_generator(settings, model_id),
    # e.g. the fixed-image generator in tasks.fakes for control-plane tests and benchmarks.
    generator_factory: str | None = None

    # --- packshots ----------------------------------------------------------------
    # A local .onnx segmentation model (BiRefNet, ISNet, U²-Net...) that cuts out every
    # opaque packshot. Unset: the default method (background flood fill + grabCut), and the
    # fallback below for packshots whose background is not uniform.
    matte_model: Path | None = None
    # The learned matte for packshots whose background is not uniform when no matte_model
    # is set: "u2netp" (U²-Net-p, pinned by sha256, installed into model_cache_dir by
    # `shotline matte install`, which `make` runs) or "none" (refuse those packshots).
    matte_fallback: Literal["u2netp", "none"] = "u2netp"

    # --- gate ---------------------------------------------------------------------
    clip_model: str = "tiny"  # an open_clip architecture name, or the offline "tiny" preset
    clip_pretrained: str | None = None  # an open_clip tag or a local checkpoint path
    clip_crop_grid: int = 3
    # Where the gate runs. "gpu": on the worker that generated the image, right after the
    # decode (CLIP on the same device, finalizing on its CPU threads while the next batch
    # denoises); the cpu queue then gates only what arrives without a GPU (a fallback, a
    # sweep, a rescore). "cpu": every image goes through the cpu queue's gate task.
    gate_on: Literal["gpu", "cpu"] = "gpu"
    # Keep the raw (pre-watermark) PNG in the blob store too. Off: a shot costs one put (its
    # final file) before review; the raw PNG's sha256 is still recorded for reproduce.
    store_raw: bool = False
    # GPU batches per generate message when gating on the GPU host: finalizing batch N
    # overlaps denoising batch N+1 inside one task, which commits before it is acked.
    gpu_batches_per_task: int = Field(default=4, ge=1)
    # Threads that finalize (watermark, encode, upload, record) on the GPU host.
    finalize_threads: int = Field(default=2, ge=1)
    # Review flags a shot whose embedding is at least this cosine to another of its product.
    near_duplicate_threshold: float = Field(default=0.97, ge=-1.0, le=1.0)
    # Chosen by tests/benchmarks/bench_watermark.py: dwtDctSvd on luma survives white
    # backgrounds, JPEG q75 and 50 % resizes; dwtDct does not. rivaGan is refused (32-bit cap).
    watermark_method: Literal["dwtDct", "dwtDctSvd"] = "dwtDctSvd"
    watermark_scale: float = 1.0  # multiplies imwatermark's quantisation step (36)
    # Levels white is lowered by so the watermark can swing upward (0 keeps pure white).
    watermark_headroom: int = 0
    # The per-deployment secret the watermark's check code is keyed with: "SECRET" (key id 1)
    # or "ID:SECRET" (ID 1..15, carried in the payload so keys can rotate). Unset: the legacy
    # unkeyed check code, which anyone with the source can forge (verify says "unkeyed").
    watermark_key: SecretStr | None = None
    # Retired keys, "ID:SECRET" each: their watermarks still verify, new ones never use them.
    watermark_old_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Accept watermarks written before keys existed (unkeyed; reported as such).
    watermark_legacy: bool = True
    c2pa_cert: Path | None = None
    c2pa_key: Path | None = None
    # PEM trust anchors `shotline verify` checks C2PA signers against (unset: "Valid" at best).
    c2pa_trust_anchors: Path | None = None
    output_format: Literal["png", "jpeg", "webp"] = "png"
    # "module:callable" replacing pipeline.gate.stage.load_gate(settings) (tests without CLIP).
    gate_factory: str | None = None

    # --- review -------------------------------------------------------------------
    reviewer: str | None = None
    # Let --reviewer / SHOTLINE_REVIEWER name someone other than the authenticated login (the
    # demo, a shared service account). Off: a reviewer can only approve as themselves.
    review_free_names: bool = False

    # --- scheduled ingestion ----------------------------------------------------
    ingest_sources: TextList = Field(default_factory=list)
    ingest_brand: str | None = None
    ingest_interval_s: float = 300.0

    # --- operations -------------------------------------------------------------
    metrics_port: int | None = None
    log_level: str = "INFO"

    @field_validator(
        "source_roots",
        "source_allow_hosts",
        "source_s3_buckets",
        "ingest_sources",
        "watermark_old_keys",
        mode="before",
    )
    @classmethod
    def _lists_from_text(cls, value: Any) -> Any:
        return split_list(value)

    @model_validator(mode="after")
    def _paths_under_var_dir(self) -> Settings:
        """Embedded state (SQLite file, blobs, model cache) lives under ``var_dir`` unless a
        path is set on its own, so one variable moves all of it (containers, tests)."""
        if "database_url" not in self.model_fields_set:
            self.database_url = f"sqlite:///{self.var_dir / 'shotline.db'}"
        if "blob_root" not in self.model_fields_set:
            self.blob_root = self.var_dir / "blobs"
        if "model_cache_dir" not in self.model_fields_set:
            self.model_cache_dir = self.var_dir / "models"
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: the whole line runs in-process."""
        return not self.broker_url


def _variable(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def describe_settings_error(exc: Exception) -> str:
    """One line naming the variable(s) that did not parse, and why."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err.get("loc") else ""
            name = _variable(field) if field else "settings"
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{name}: {msg}")
        return "; ".join(parts) or str(exc).splitlines()[0]
    text = " ".join(str(exc).split())
    found = re.search(r'field "([^"]+)"', text)
    if found:
        detail = text.split('"EnvSettingsSource"', 1)[-1].strip() or text
        return f"{_variable(found.group(1))}: not valid JSON ({detail})"
    return text


def load_settings(**values: Any) -> Settings:
    """``Settings()`` from the environment, with any parse error as one ``SettingsInvalid``
    line naming the variable (no pydantic report, no traceback)."""
    try:
        return Settings(**values)
    except (ValidationError, _PydanticSettingsError) as exc:
        raise SettingsInvalid(describe_settings_error(exc)) from None
