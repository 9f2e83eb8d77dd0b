"""Shot embeddings on Postgres and SQLite: stored with their model, near-duplicates within
a product, ``nearest_assets`` ordering and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session

from catalog.embeddings import (
    EmbeddingError,
    embedding_of,
    from_bytes,
    near_duplicates,
    nearest_assets,
    store_embedding,
)
from catalog.models import ShotState
from pipeline.settings import Settings
from tests.factories import make_asset, make_brand, make_product, make_shot

D = 32


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(D).astype(np.float32)
    return v / np.linalg.norm(v)


def towards(base: np.ndarray, other: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector at cosine ``cos`` from ``base`` (in the plane of base and other)."""
    ortho = other - (other @ base) * base
    ortho /= np.linalg.norm(ortho)
    return (cos * base + np.sqrt(1 - cos**2) * ortho).astype(np.float32)


def test_embedding_stored_as_float16_with_its_model(session: Session) -> None:
    rev = make_product(session, make_brand(session))
    shot = make_shot(session, rev, state=ShotState.pending_review.value)
    v = unit(1) * 3.0  # stored normalised
    store_embedding(session, shot.id, "ViT-B-32:abc123", v)
    store_embedding(session, shot.id, "ViT-B-32:abc123", unit(2))  # a redelivery: no-op
    row = embedding_of(session, shot.id)
    assert row is not None and row.clip_model == "ViT-B-32:abc123" and row.dim == D
    assert len(row.vector) == 2 * D  # float16
    back = from_bytes(row.vector, row.dim)
    assert np.allclose(back, unit(1), atol=1e-3)


def test_near_duplicate_flag_within_a_product_only(session: Session) -> None:
    brand = make_brand(session)
    rev = make_product(session, brand)
    other_rev = make_product(session, brand)
    a, b, c = (make_shot(session, rev, template=t) for t in ("hero_white", "lifestyle", "flat"))
    stranger = make_shot(session, other_rev)
    base = unit(10)
    store_embedding(session, a.id, "m", base)
    store_embedding(session, b.id, "m", base)  # the identical image
    store_embedding(session, c.id, "m", towards(base, unit(11), 0.80))  # a different one
    store_embedding(session, stranger.id, "m", base)  # same image, other product: no flag
    flags = near_duplicates(session, [a.id, b.id, c.id, stranger.id], threshold=0.97)
    assert set(flags) == {a.id, b.id}
    assert flags[a.id].other_shot_id == b.id and flags[a.id].cosine == pytest.approx(1.0, abs=2e-3)
    assert flags[b.id].other_shot_id == a.id
    # The threshold decides: at 0.75 the 0.80 shot is flagged too.
    assert near_duplicates(session, [c.id], threshold=0.75)[c.id].cosine == pytest.approx(
        0.80, abs=2e-3
    )


def test_near_duplicate_ignores_other_clip_models(session: Session) -> None:
    rev = make_product(session, make_brand(session))
    a, b = make_shot(session, rev), make_shot(session, rev, template="lifestyle")
    store_embedding(session, a.id, "model-one", unit(3))
    store_embedding(session, b.id, "model-two", unit(3))
    assert near_duplicates(session, [a.id, b.id], threshold=0.97) == {}


def _published(session: Session, brand, vec: np.ndarray, model: str = "m") -> int:  # type: ignore[no-untyped-def]
    rev = make_product(session, brand)
    shot = make_shot(session, rev, state=ShotState.published.value)
    store_embedding(session, shot.id, model, vec)
    return make_asset(session, shot).id


def test_like_orders_published_assets_by_cosine(session: Session) -> None:
    brand = make_brand(session)
    base, side = unit(20), unit(21)
    origin = _published(session, brand, base)
    near = _published(session, brand, towards(base, side, 0.95))
    mid = _published(session, brand, towards(base, side, 0.60))
    far = _published(session, brand, towards(base, side, 0.10))
    _published(session, brand, base, model="another-model")  # never compared
    _published(session, make_brand(session), base)  # another brand's asset: not listed
    got = nearest_assets(session, origin, k=10, chunk=2)  # chunked: 2 vectors per block
    assert [n.asset_id for n in got] == [near, mid, far]
    assert [round(n.cosine, 2) for n in got] == [0.95, 0.60, 0.10]
    assert all(n.sku and n.key for n in got)
    assert [n.asset_id for n in nearest_assets(session, origin, k=2)] == [near, mid]


def test_like_errors_name_the_asset(session: Session) -> None:
    brand = make_brand(session)
    shot = make_shot(session, make_product(session, brand), state=ShotState.published.value)
    bare = make_asset(session, shot).id
    with pytest.raises(EmbeddingError, match=f"asset {bare}: no stored embedding"):
        nearest_assets(session, bare)
    with pytest.raises(EmbeddingError, match="asset 987654321: no such asset"):
        nearest_assets(session, 987654321)


def test_line_keeps_the_gates_embedding_with_its_model(tmp_settings: Settings) -> None:
    """The real gate with the tiny CLIP, in-process (a fixed-image generator keeps it fast):
    each gated shot's embedding is the gate's full-image feature, recorded under the gate's
    model id (with checkpoint digest)."""
    from catalog import migrate
    from catalog.db import make_engine, make_sessionmaker
    from tasks.context import context_for
    from tasks.runner import run_line
    from tests.tasks.conftest import seed_shots

    tmp_settings = tmp_settings.model_copy(
        update={"generator_factory": "tasks.fakes:fixed_image_generator"}
    )
    migrate.upgrade(tmp_settings.database_url)
    ids = seed_shots(tmp_settings, 2)
    run_line(tmp_settings, brand="acme", progress=False)
    gate = context_for(tmp_settings).gate()
    engine = make_engine(tmp_settings.database_url)
    try:
        with make_sessionmaker(engine)() as s:
            rows = [embedding_of(s, i) for i in ids]
    finally:
        engine.dispose()
    dim = gate.filter.encoder.encode_texts(["a"]).shape[1]
    for row in rows:
        assert row is not None and row.clip_model == gate.clip_model and row.dim == dim
        assert "@" in row.clip_model  # names the checkpoint digest
        assert np.linalg.norm(from_bytes(row.vector, row.dim)) == pytest.approx(1.0, abs=1e-2)
