"""Creating a training run: check the dataset, record the row (before any step runs)."""

from __future__ import annotations

from pathlib import Path

from catalog.brands import upsert_brand
from catalog.training import create_training
from pipeline.brand.config import BrandConfig
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import Dataset, load_dataset
from tasks.context import WorkerContext
from tasks.training.sources import dataset_dir


def new_run(
    ctx: WorkerContext,
    brand: BrandConfig,
    images: str,
    name: str,
    trigger: str,
    config: TrainConfig,
) -> tuple[int, Dataset]:
    """Load and check ``images`` (a folder or ``s3://bucket/prefix``; ``DatasetError`` if
    unusable), then create the run row."""
    dataset = load_dataset(dataset_dir(ctx.settings, images), trigger)
    with ctx.sessions() as s, s.begin():
        brand_row = upsert_brand(s, brand)
        row = create_training(
            s,
            brand_id=brand_row.id,
            name=name,
            trigger_word=trigger,
            source_uri=images if images.startswith("s3://") else str(Path(images).resolve()),
            dataset_digest=dataset.digest,
            files=dataset.files,
            base_model=brand.base_model,
            hyperparameters=config.to_json(),
            warnings=dataset.warnings,
        )
        return row.id, dataset
