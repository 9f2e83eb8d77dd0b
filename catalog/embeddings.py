"""Shot embeddings: stored once per shot (float16), compared with numpy.

There is no vector index here (no pgvector on the fleet's Postgres): near-duplicate checks
compare one shot with the other shots of its product (a handful), and ``--like`` scans the
published assets of one brand and CLIP model in chunks, so memory stays bounded by the chunk,
not the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import Asset, Product, ProductRevision, Shot, ShotEmbedding

DTYPE = np.float16
SCAN_CHUNK = 5000  # embeddings compared per query round trip in ``nearest_assets``
NEAR_DUPLICATE = 0.97  # the default cosine at or above which two shots are near-duplicates


class EmbeddingError(ValueError):
    """An asset or shot to compare that has no embedding (or doesn't exist)."""


def to_bytes(vector: np.ndarray) -> bytes:
    """L2-normalised float16 bytes (normalising here makes every cosine a dot product)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise EmbeddingError("embedding is zero or not finite")
    return (v / norm).astype(DTYPE).tobytes()


def from_bytes(data: bytes, dim: int) -> np.ndarray:
    v = np.frombuffer(data, dtype=DTYPE)
    if v.size != dim:
        raise EmbeddingError(f"stored embedding has {v.size} values, expected {dim}")
    return v.astype(np.float32)


def store_embedding(session: Session, shot_id: int, clip_model: str, vector: np.ndarray) -> bool:
    """Record ``shot_id``'s embedding once; a redelivered gate finds it there (False)."""
    if session.scalar(select(ShotEmbedding.id).where(ShotEmbedding.shot_id == shot_id)):
        return False
    data = to_bytes(vector)
    session.add(
        ShotEmbedding(
            shot_id=shot_id,
            clip_model=clip_model[:200],
            dim=len(data) // np.dtype(DTYPE).itemsize,
            vector=data,
        )
    )
    return True


def _embedding_of_shot(session: Session, shot_id: int) -> ShotEmbedding | None:
    return session.scalar(select(ShotEmbedding).where(ShotEmbedding.shot_id == shot_id))


@dataclass(frozen=True)
class Neighbour:
    shot_id: int
    cosine: float
    asset_id: int | None = None
    sku: str | None = None
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "shot_id": self.shot_id,
            "cosine": round(self.cosine, 4),
            "asset_id": self.asset_id,
            "sku": self.sku,
            "key": self.key,
        }


def near_duplicates(
    session: Session, shot_id: int, threshold: float = NEAR_DUPLICATE
) -> list[Neighbour]:
    """Other shots of the same product (any revision) whose image is at least ``threshold``
    cosine-similar to this shot's, under the same CLIP model; most similar first."""
    mine = _embedding_of_shot(session, shot_id)
    if mine is None:
        return []
    product_id = session.scalar(
        select(ProductRevision.product_id)
        .join(Shot, Shot.product_revision_id == ProductRevision.id)
        .where(Shot.id == shot_id)
    )
    rows = session.execute(
        select(ShotEmbedding.shot_id, ShotEmbedding.vector, ShotEmbedding.dim)
        .join(Shot, Shot.id == ShotEmbedding.shot_id)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .where(
            ProductRevision.product_id == product_id,
            ShotEmbedding.clip_model == mine.clip_model,
            ShotEmbedding.shot_id != shot_id,
        )
    ).all()
    if not rows:
        return []
    me = from_bytes(mine.vector, mine.dim)
    others = np.stack([from_bytes(v, d) for _, v, d in rows])
    sims = others @ me
    found = [Neighbour(int(r[0]), float(c)) for r, c in zip(rows, sims, strict=True)]
    return sorted((n for n in found if n.cosine >= threshold), key=lambda n: -n.cosine)


def _published_chunks(
    session: Session, brand_id: int, clip_model: str, exclude_shot: int
) -> Iterator[list[Any]]:
    last = 0
    while True:
        rows = session.execute(
            select(Asset.id, Asset.shot_id, Asset.key, ShotEmbedding.vector, ShotEmbedding.dim)
            .join(ShotEmbedding, ShotEmbedding.shot_id == Asset.shot_id)
            .join(Shot, Shot.id == Asset.shot_id)
            .where(
                Shot.brand_id == brand_id,
                ShotEmbedding.clip_model == clip_model,
                Asset.shot_id != exclude_shot,
                Asset.id > last,
            )
            .order_by(Asset.id)
            .limit(SCAN_CHUNK)
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        yield list(rows)


def nearest_assets(session: Session, asset_id: int, k: int = 10) -> list[Neighbour]:
    """The ``k`` published assets of the same brand most similar to ``asset_id``'s image
    (``EmbeddingError`` for an unknown asset or one without an embedding)."""
    row = session.execute(
        select(Asset.shot_id, Shot.brand_id)
        .join(Shot, Shot.id == Asset.shot_id)
        .where(Asset.id == asset_id)
    ).first()
    if row is None:
        raise EmbeddingError(f"asset:{asset_id}: no such asset")
    shot_id, brand_id = int(row[0]), int(row[1])
    mine = _embedding_of_shot(session, shot_id)
    if mine is None:
        raise EmbeddingError(f"asset:{asset_id}: its shot {shot_id} has no stored embedding")
    me = from_bytes(mine.vector, mine.dim)
    best: list[tuple[float, Any]] = []
    for rows in _published_chunks(session, brand_id, mine.clip_model, shot_id):
        sims = np.stack([from_bytes(r[3], r[4]) for r in rows]) @ me
        best.extend(zip(sims.tolist(), rows, strict=True))
        best = sorted(best, key=lambda t: -t[0])[:k]  # bounded: k kept between chunks
    skus = _skus(session, [int(r[1]) for _, r in best])
    return [
        Neighbour(int(r[1]), float(c), asset_id=int(r[0]), sku=skus.get(int(r[1])), key=r[2])
        for c, r in best
    ]


def _skus(session: Session, shot_ids: list[int]) -> dict[int, str]:
    if not shot_ids:
        return {}
    rows = session.execute(
        select(Shot.id, Product.sku)
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .where(Shot.id.in_(shot_ids))
    ).all()
    return {int(i): str(s) for i, s in rows}
