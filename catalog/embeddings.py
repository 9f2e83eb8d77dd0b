"""Shot embeddings: store the gate's full-image CLIP feature, and search it.

Vectors are float16 bytes (half the space of float32; cosine error ~1e-3, far below any
threshold here). There is no pgvector: cosine is numpy over a bounded candidate set, the
shots of one product for near-duplicates, the published assets of one brand and CLIP model
(read in chunks, so memory stays bounded) for ``lineage --like``. Vectors of different CLIP
models are never compared.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from catalog.models import Asset, Product, ProductRevision, Shot, ShotEmbedding, utcnow
from catalog.shots import id_chunks

LIKE_CHUNK = 4096  # vectors per numpy block in ``nearest_assets``
DUPLICATE_CHUNK = 1000  # asked-for shots per round of ``near_duplicates``


class EmbeddingError(LookupError):
    """No such asset, or it has no stored embedding: one line for the CLI."""


@dataclass(frozen=True)
class NearDuplicate:
    shot_id: int
    other_shot_id: int
    cosine: float


@dataclass(frozen=True)
class Neighbour:
    asset_id: int
    shot_id: int
    key: str
    sku: str
    cosine: float


def to_bytes(vector: np.ndarray) -> bytes:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("embedding is zero or not finite")
    return (v / norm).astype("<f2").tobytes()


def from_bytes(data: bytes, dim: int) -> np.ndarray:
    v = np.frombuffer(data, dtype="<f2")
    if v.size != dim:
        raise ValueError(f"stored embedding has {v.size} values, expected {dim}")
    return v.astype(np.float32)


def store_embedding(session: Session, shot_id: int, clip_model: str, vector: np.ndarray) -> None:
    """Write a shot's embedding once (a redelivered task's second write is a no-op)."""
    data = to_bytes(vector)
    values = {
        "shot_id": shot_id,
        "clip_model": clip_model[:200],
        "dim": len(data) // 2,
        "vector": data,
        "created_at": utcnow(),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(ShotEmbedding).values(**values).on_conflict_do_nothing())


def replace_embedding(session: Session, shot_id: int, clip_model: str, vector: np.ndarray) -> None:
    """A re-encode (``gate rescore`` with a new CLIP model) overwrites the shot's vector."""
    row = session.scalar(select(ShotEmbedding).where(ShotEmbedding.shot_id == shot_id))
    if row is None:
        store_embedding(session, shot_id, clip_model, vector)
        return
    data = to_bytes(vector)
    row.clip_model, row.dim, row.vector, row.created_at = (
        clip_model[:200],
        len(data) // 2,
        data,
        utcnow(),
    )


def embedding_of(session: Session, shot_id: int) -> ShotEmbedding | None:
    return session.scalar(select(ShotEmbedding).where(ShotEmbedding.shot_id == shot_id))


def near_duplicates(
    session: Session, shot_ids: Sequence[int], threshold: float
) -> dict[int, NearDuplicate]:
    """For each shot, its most similar other shot of the same product when the cosine is at
    least ``threshold`` (same CLIP model only). Computed on read: a shot made later still
    flags an earlier one, and a threshold change needs no migration. Works through
    ``shot_ids`` a chunk at a time, so no IN list and no candidate set grows with the input."""
    out: dict[int, NearDuplicate] = {}
    for part in id_chunks(dict.fromkeys(shot_ids), DUPLICATE_CHUNK):
        out.update(_near_duplicates_of(session, part, threshold))
    return out


def _near_duplicates_of(
    session: Session, shot_ids: list[int], threshold: float
) -> dict[int, NearDuplicate]:
    products = set(
        session.scalars(
            select(ProductRevision.product_id)
            .join(Shot, Shot.product_revision_id == ProductRevision.id)
            .where(Shot.id.in_(shot_ids))
        )
    )
    if not products:
        return {}
    rows = session.execute(
        select(ProductRevision.product_id, Shot.id, ShotEmbedding)
        .join(Shot, Shot.product_revision_id == ProductRevision.id)
        .join(ShotEmbedding, ShotEmbedding.shot_id == Shot.id)
        .where(ProductRevision.product_id.in_(products))
    ).all()
    groups: dict[tuple[int, str], list[tuple[int, ShotEmbedding]]] = defaultdict(list)
    for product_id, sid, emb in rows:
        groups[(product_id, emb.clip_model)].append((sid, emb))
    wanted = set(shot_ids)
    out: dict[int, NearDuplicate] = {}
    for members in groups.values():
        if len(members) < 2 or not wanted.intersection(sid for sid, _ in members):
            continue
        out.update(_group_duplicates(members, wanted, threshold))
    return out


def _group_duplicates(
    members: list[tuple[int, ShotEmbedding]], wanted: set[int], threshold: float
) -> dict[int, NearDuplicate]:
    ids = [sid for sid, _ in members]
    mat = np.stack([from_bytes(e.vector, e.dim) for _, e in members])
    rows = [i for i, sid in enumerate(ids) if sid in wanted]
    sims = mat[rows] @ mat.T  # only the asked-for rows: (asked, group), not (group, group)
    sims[np.arange(len(rows)), rows] = -np.inf  # a shot is not its own duplicate
    out: dict[int, NearDuplicate] = {}
    for r, i in enumerate(rows):
        j = int(np.argmax(sims[r]))
        cos = float(sims[r, j])
        if cos >= threshold:
            out[ids[i]] = NearDuplicate(ids[i], ids[j], cos)
    return out


def nearest_assets(
    session: Session, asset_id: int, k: int = 10, chunk: int = LIKE_CHUNK
) -> list[Neighbour]:
    """The ``k`` published assets of the same brand and CLIP model nearest to ``asset_id``,
    best first (the asset itself left out). Reads candidates ``chunk`` rows at a time."""
    origin = session.execute(
        select(Asset, Shot.brand_id, ShotEmbedding)
        .join(Shot, Shot.id == Asset.shot_id)
        .outerjoin(ShotEmbedding, ShotEmbedding.shot_id == Shot.id)
        .where(Asset.id == asset_id)
    ).first()
    if origin is None:
        raise EmbeddingError(f"asset {asset_id}: no such asset")
    asset, brand_id, emb = origin
    if emb is None:
        raise EmbeddingError(f"asset {asset_id}: no stored embedding (gated before embeddings)")
    query = from_bytes(emb.vector, emb.dim)
    stmt = (
        select(Asset.id, Asset.shot_id, Asset.key, ShotEmbedding.vector, ShotEmbedding.dim)
        .join(Shot, Shot.id == Asset.shot_id)
        .join(ShotEmbedding, ShotEmbedding.shot_id == Shot.id)
        .where(
            Shot.brand_id == brand_id,
            ShotEmbedding.clip_model == emb.clip_model,
            ShotEmbedding.dim == emb.dim,
            Asset.id != asset.id,
        )
        .order_by(Asset.id)
        .execution_options(yield_per=chunk)
    )
    best: list[tuple[float, int, int, str]] = []  # a k-heap of (cosine, asset, shot, key)
    for part in session.execute(stmt).partitions(chunk):
        # One buffer per chunk: every row has the query's dim (filtered above).
        mat = np.frombuffer(b"".join(r.vector for r in part), dtype="<f2").reshape(-1, emb.dim)
        sims = mat.astype(np.float32) @ query
        for r, cos in zip(part, sims.tolist(), strict=True):
            item = (float(cos), -r.id, r.shot_id, r.key)
            if len(best) < k:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
    ranked = sorted(best, reverse=True)
    skus = _skus(session, [shot_id for _, _, shot_id, _ in ranked])
    return [Neighbour(-neg, sid, key, skus.get(sid, ""), cos) for cos, neg, sid, key in ranked]


def _skus(session: Session, shot_ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in id_chunks(shot_ids):
        rows = session.execute(
            select(Shot.id, Product.sku)
            .join(ProductRevision, Shot.product_revision_id == ProductRevision.id)
            .join(Product, ProductRevision.product_id == Product.id)
            .where(Shot.id.in_(part))
        ).all()
        out.update({sid: sku for sid, sku in rows})
    return out
