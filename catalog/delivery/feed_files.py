"""One writer for every store export file: ``shotline export shopify|gmc`` and beat's feed
refresh both stream a brand's current assets through ``write_export``, so the two cannot
drift apart in what a feed lists or how it is written.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy.orm import Session

from catalog.delivery.exports import export_rows
from pipeline.delivery.feeds import Exporter, FeedStats
from pipeline.delivery.outfile import atomic_text

FeedFormat = Literal["csv", "tsv", "xml"]  # Shopify product CSV, Merchant Center TSV or XML


def write_export(
    session: Session,
    exporter: Exporter,
    brand_id: int,
    fmt: FeedFormat,
    path: Path,
    *,
    since: datetime | None = None,
    import_run: int | None = None,
) -> FeedStats:
    """The current assets of ``brand_id`` in ``exporter``'s channel, written as ``fmt`` to
    ``path`` whole or not at all (``atomic_text``). Raises ``FeedError`` (a row the channel
    config cannot render) and ``OutputPathError`` (the path cannot be written)."""
    write = {"csv": exporter.shopify, "tsv": exporter.gmc_tsv, "xml": exporter.gmc_xml}[fmt]
    rendition = exporter.spec.feed_rendition().name
    rows = export_rows(
        session, brand_id, exporter.channel, rendition, since=since, import_run=import_run
    )
    with atomic_text(path) as fh:
        return write(rows, fh)
