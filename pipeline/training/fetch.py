"""A training set under an ``s3://bucket/prefix``: copied into a local folder, bounded.

Only the objects directly under the prefix whose names end in an image suffix or are a
caption file are fetched (listed with ``Delimiter="/"``, so a name never holds a ``/``) and
names are sanitized before they become local paths; each object is capped at the image
size limit and the count at the dataset's file limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.files import atomic_write_bytes
from pipeline.storage import s3_error, sanitize_part
from pipeline.training.dataset import IMAGE_SUFFIXES, MAX_FILES, MAX_IMAGE_BYTES, DatasetError

CAPTION_NAMES = frozenset({"metadata.jsonl", "captions.csv"})


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise DatasetError([f"{uri}: expected s3://bucket/prefix"])
    prefix = parsed.path.lstrip("/")
    return parsed.netloc, (prefix.rstrip("/") + "/") if prefix else ""


def _wanted(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix == ".txt" or name in CAPTION_NAMES


def fetch_prefix(client: Any, uri: str, dest: Path) -> Path:
    """Copy the training files under ``uri`` into ``dest``; return ``dest``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return _fetch(client, uri, dest)
    except (BotoCoreError, ClientError) as exc:
        bucket, prefix = parse_s3_uri(uri)
        why = s3_error(exc, "read", bucket, prefix)
        raise DatasetError([f"{uri}: cannot read the training set: {why}"]) from None


def _fetch(client: Any, uri: str, dest: Path) -> Path:
    bucket, prefix = parse_s3_uri(uri)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) :]
            if not name or not _wanted(name):
                continue
            if int(obj.get("Size", 0)) > MAX_IMAGE_BYTES:
                raise DatasetError(
                    [f"s3://{bucket}/{obj['Key']}: larger than {MAX_IMAGE_BYTES >> 20} MiB"]
                )
            count += 1
            if count > MAX_FILES * 2:
                raise DatasetError([f"{uri}: more than {MAX_FILES} images"])
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read(
                MAX_IMAGE_BYTES + 1
            )
            if len(body) > MAX_IMAGE_BYTES:
                raise DatasetError(
                    [f"s3://{bucket}/{obj['Key']}: larger than {MAX_IMAGE_BYTES >> 20} MiB"]
                )
            atomic_write_bytes(dest / sanitize_part(name), body)
    return dest
