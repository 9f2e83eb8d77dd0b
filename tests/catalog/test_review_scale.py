"""Review at catalog scale on Postgres: more shots than one statement may bind (65,535).

The rows are made with set-based SQL (the factories would take minutes); every call under
test then works through ids past Postgres' bind-parameter limit, which one IN list refused.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from catalog.embeddings import near_duplicates
from catalog.models import ReviewEvent, Shot
from catalog.review import Reviewer, approve, decide_pending, iter_records, pending_ids
from catalog.status import shot_states
from tests.factories import make_brand, make_gated_shot

N = 66_000  # past 65,535 bind parameters


def _clone_pending(session: Session, template_shot: int, n: int) -> None:
    """``n`` copies of a gated shot (same revision, distinct templates), pending review."""
    session.execute(
        text(
            """
            INSERT INTO shots (brand_id, product_revision_id, variant_key, variant,
                brand_config_digest, template_name, template_digest, prompt, negative_prompt,
                sanitizer_removals, prompt_warnings, seed, model_id, adapters, width, height,
                steps, guidance, scheduler, state, attempts, packshot, created_at, updated_at)
            SELECT brand_id, product_revision_id, variant_key, variant, brand_config_digest,
                'bulk-' || g, template_digest, prompt, negative_prompt, sanitizer_removals,
                prompt_warnings, seed + g, model_id, adapters, width, height, steps, guidance,
                scheduler, 'pending_review', 0, packshot, now(), now()
            FROM shots, generate_series(1, :n) g WHERE shots.id = :id
            """
        ),
        {"n": n, "id": template_shot},
    )


def test_review_past_the_bind_parameter_limit(pg_engine) -> None:  # type: ignore[no-untyped-def]
    conn = pg_engine.connect()
    trans = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint")
    try:
        brand = make_brand(session, config={"reviewers": ["alice"]})
        first = make_gated_shot(session, brand=brand)
        _clone_pending(session, first.id, N)
        ids = pending_ids(session, brand=brand.name)
        assert len(ids) == N + 1 and ids == sorted(ids)
        assert near_duplicates(session, ids, 0.9) == {}  # no embeddings: nothing flagged
        assert {s for s, _ in shot_states(session, ids).values()} == {"pending_review"}

        half = ids[: N // 2 + 1]
        events = approve(session, half, Reviewer("alice", "alice"))
        assert [e.shot_id for e in events] == half
        assert first.state == "approved"  # a loaded shot sees its new state

        rest = decide_pending(session, Reviewer("alice", "alice"), brand=brand.name)
        assert rest == ids[N // 2 + 1 :]
        n_events = session.scalar(
            select(func.count())
            .select_from(ReviewEvent)
            .join(Shot)
            .where(Shot.brand_id == brand.id)
        )
        assert n_events == N + 1
        pages = iter_records(session, brand=brand.name, status="approved", page=20_000)
        sizes = [len(p) for p in pages]
        assert sum(sizes) == N + 1 and max(sizes) == 20_000
    finally:
        session.close()
        trans.rollback()
        conn.close()
