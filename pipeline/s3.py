"""The one S3 client factory: the blob store, source fetches, scheduled ingestion, LoRA
training sets and ``verify`` all build their client here, so they share one configuration
(path-style addressing for MinIO and moto, bounded timeouts and retries, no
``Expect: 100-continue`` round trip per upload) and one client per endpoint and region in a
process (boto3 clients are thread-safe; each costs ~0.1 s of CPU to build). Vendor errors
are mapped to ours in one place too: ``pipeline.storage.s3_error``.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=8)
def s3_client(endpoint_url: str | None, region: str, read_timeout: float = 60.0) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.handlers import add_expect_header

    config = Config(
        region_name=region,
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=read_timeout,
        # MinIO and moto serve buckets by path, not by virtual host.
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
    # botocore sends every PutObject body behind "Expect: 100-continue": one more round trip
    # per upload, which only pays off for bodies large enough to be worth not sending to a
    # server that will refuse them. Product shots are small.
    client.meta.events.unregister("before-call.s3", add_expect_header)
    return client
