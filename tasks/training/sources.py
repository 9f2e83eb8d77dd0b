"""Where a run's images are read from: a local folder as given, or an ``s3://`` prefix
copied into ``var_dir/training-sets/`` (on whichever machine runs the job)."""

from __future__ import annotations

from pathlib import Path

from pipeline.digests import sha256_bytes
from pipeline.s3 import s3_client
from pipeline.settings import Settings
from pipeline.training.fetch import fetch_prefix


def dataset_dir(settings: Settings, source: str) -> Path:
    if not source.startswith("s3://"):
        return Path(source)
    dest = Path(settings.var_dir) / "training-sets" / sha256_bytes(source.encode())[:16]
    client = s3_client(settings.s3_endpoint_url, settings.s3_region)
    return fetch_prefix(client, source, dest)
