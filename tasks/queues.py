"""Where work goes: queue names, task names, routes, and which models a GPU queue serves.

- ``gpu.<model-key>`` (e.g. ``gpu.tiny``): ``shotline.generate_batch``. One queue per base
  model so a worker keeps one model loaded and never swaps it between tasks.
- ``cpu``: ``shotline.publish_shot``, ``shotline.sweep_stalled``, ``shotline.fetch_sources``
  (source image downloads), ``shotline.regate_shots`` (a rescore's re-encodes), the
  beat-driven ``shotline.refresh_feeds`` (store feeds after new publications) and
  ``shotline.gate_shot`` (CLIP + watermark + provenance for images that arrive without a
  GPU: every image with ``gate_on=cpu``), so CPU work never stalls a GPU.
- ``ingest``: ``shotline.import_catalog`` and the beat-driven ``shotline.ingest_due_catalogs``.

The names are the wire format between CLI, workers, beat and docker/compose.yaml: renaming
one strands the messages already queued under the old name.
"""

from __future__ import annotations

import re

from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import load_brand
from pipeline.settings import Settings

TASK_GENERATE = "shotline.generate_batch"
TASK_GATE = "shotline.gate_shot"
TASK_PUBLISH = "shotline.publish_shot"
TASK_IMPORT = "shotline.import_catalog"
TASK_INGEST = "shotline.ingest_due_catalogs"
TASK_SWEEP = "shotline.sweep_stalled"
TASK_FETCH = "shotline.fetch_sources"
TASK_TRAIN = "shotline.train_lora"
TASK_REGATE = "shotline.regate_shots"
TASK_FEEDS = "shotline.refresh_feeds"

QUEUE_CPU = "cpu"
QUEUE_INGEST = "ingest"
GPU_PREFIX = "gpu."
# LoRA training: train.<model-key>, routed per base model like generation (sent with queue=).
TRAIN_PREFIX = "train."

# generate_batch has no route: it is sent with queue=gpu.<model-key> for its batch's model.
ROUTES: dict[str, dict[str, str]] = {
    TASK_GATE: {"queue": QUEUE_CPU},
    TASK_PUBLISH: {"queue": QUEUE_CPU},
    TASK_SWEEP: {"queue": QUEUE_CPU},
    TASK_FETCH: {"queue": QUEUE_CPU},
    TASK_REGATE: {"queue": QUEUE_CPU},
    TASK_FEEDS: {"queue": QUEUE_CPU},
    TASK_IMPORT: {"queue": QUEUE_INGEST},
    TASK_INGEST: {"queue": QUEUE_INGEST},
}


def model_key(model_id: str) -> str:
    """Short, queue-safe name of a model id: ``tiny``, ``runwayml/sd-v1-5`` -> ``sd-v1-5``."""
    leaf = re.split(r"[\\/]", model_id.rstrip("/\\"))[-1] or model_id
    leaf = re.sub(r"\.(safetensors|ckpt|bin|pt)$", "", leaf, flags=re.I)
    key = re.sub(r"[^a-z0-9_-]+", "-", leaf.lower()).strip("-")
    return key[:48] or "default"


def gpu_queue(key: str) -> str:
    return f"{GPU_PREFIX}{key}"


def train_queue(key: str) -> str:
    return f"{TRAIN_PREFIX}{key}"


def models_for_queue(settings: Settings, queue: str) -> list[str]:
    """Model ids a ``gpu.<key>`` worker should preload: SHOTLINE_MODEL, else brand base models."""
    key = queue.removeprefix(GPU_PREFIX)
    if settings.model:
        return [settings.model] if model_key(settings.model) == key else []
    found: list[str] = []
    for path in sorted(settings.brands_dir.glob("*.y*ml")):
        try:
            base = load_brand(path).base_model
        except BrandConfigError:
            continue
        if model_key(base) == key and base not in found:
            found.append(base)
    return found
