"""Shot embeddings on SQLite and Postgres: stored once as float16, near-duplicates within a
product, and the nearest published assets of a brand (issue 14, part 3)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.embeddings import (
    EmbeddingError,
    from_bytes,
    near_duplicates,
    nearest_assets,
    store_embedding,
    to_bytes,
)
from catalog.models import ShotEmbedding
from tests.factories import make_asset, make_brand, make_gated_shot, make_product, make_shot

MODEL = "ViT-B-32@abc"


def _unit(*xs: float) -> np.ndarray:
    v = np.zeros(512, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def test_vectors_round_trip_as_normalised_float16() -> None:
    v = np.random.default_rng(0).normal(size=512).astype(np.float32) * 7
    back = from_bytes(to_bytes(v), 512)
    assert back.dtype == np.float32 and len(to_bytes(v)) == 1024
    np.testing.assert_allclose(back, v / np.linalg.norm(v), atol=1e-3)
    with pytest.raises(EmbeddingError):
        to_bytes(np.zeros(4))


def test_store_once_and_flag_near_duplicates_of_the_same_product(session: Session) -> None:
    brand = make_brand(session)
    rev = make_product(session, brand, "MUG-1")
    other = make_product(session, brand, "MUG-2")
    a, b, c = (make_shot(session, rev, template=t) for t in ("hero", "side", "top"))
    d = make_shot(session, other)
    session.flush()
    assert store_embedding(session, a.id, MODEL, _unit(1, 0))
    assert not store_embedding(session, a.id, MODEL, _unit(0, 1)), "a redelivery adds nothing"
    store_embedding(session, b.id, MODEL, _unit(1, 0.1))  # cosine 0.995 to a
    store_embedding(session, c.id, MODEL, _unit(1, 1))  # cosine 0.707 to a
    store_embedding(session, d.id, MODEL, _unit(1, 0))  # identical, but another product
    session.flush()
    assert session.scalar(select(func.count()).select_from(ShotEmbedding)) >= 4
    dupes = near_duplicates(session, a.id, 0.97)
    assert [n.shot_id for n in dupes] == [b.id]
    assert dupes[0].cosine == pytest.approx(0.995, abs=2e-3)
    assert near_duplicates(session, c.id, 0.97) == []
    assert [n.shot_id for n in near_duplicates(session, a.id, 0.5)] == [b.id, c.id]


def test_nearest_published_assets_of_the_brand(session: Session) -> None:
    brand = make_brand(session)
    shots = [make_gated_shot(session, brand=brand, sku=f"S-{i}") for i in range(4)]
    vectors = [_unit(1, 0), _unit(1, 0.2), _unit(0, 1), _unit(1, 1)]
    assets = []
    for shot, v in zip(shots, vectors, strict=True):
        store_embedding(session, shot.id, MODEL, v)
        assets.append(make_asset(session, shot))
    unpublished = make_gated_shot(session, brand=brand, sku="S-x")
    store_embedding(session, unpublished.id, MODEL, _unit(1, 0))
    session.flush()
    like = nearest_assets(session, assets[0].id, k=2)
    assert [n.asset_id for n in like] == [assets[1].id, assets[3].id]
    assert like[0].sku == "S-1" and like[0].key == assets[1].key
    assert like[0].cosine > like[1].cosine
    with pytest.raises(EmbeddingError, match="no such asset"):
        nearest_assets(session, 2**31 - 1)
    bare = make_asset(session, make_gated_shot(session, brand=brand, sku="S-bare"))
    session.flush()
    with pytest.raises(EmbeddingError, match="no stored embedding"):
        nearest_assets(session, bare.id)
