"""Review state changes: append-only events, the override rule, refusals, listing, export."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.models import ReviewEvent, ShotState
from catalog.review import (
    Reviewer,
    ReviewError,
    approve,
    clean_reviewer_name,
    connection_identity,
    current_review_state,
    decisions_csv,
    escape_formula,
    list_shots,
    pending_ids,
    reject,
    resolve_reviewer,
)
from tests.factories import make_brand, make_gated_shot, make_import_run


def R(name: str) -> Reviewer:
    """A reviewer whose claimed name is also the authenticated one (a free-name session)."""
    return Reviewer(name, name)


def _events(session: Session, shot_id: int) -> list[ReviewEvent]:
    return list(
        session.scalars(
            select(ReviewEvent).where(ReviewEvent.shot_id == shot_id).order_by(ReviewEvent.id)
        )
    )


def test_approve_pending_appends_event_and_moves_state(session: Session) -> None:
    shot = make_gated_shot(session)
    events = approve(session, [shot.id], R("alice"), note="looks right")
    assert [(e.shot_id, e.reviewer, e.action, e.note) for e in events] == [
        (shot.id, "alice", "approve", "looks right")
    ]
    assert shot.state == ShotState.approved
    assert current_review_state(_events(session, shot.id)) == "approved"


def test_reject_needs_reason_and_records_it(session: Session) -> None:
    shot = make_gated_shot(session)
    with pytest.raises(ReviewError, match="--reason"):
        reject(session, [shot.id], R("bob"), reason="  ")
    reject(session, [shot.id], R("bob"), reason="logo visible")
    assert shot.state == ShotState.rejected
    [event] = _events(session, shot.id)
    assert (event.action, event.reviewer, event.note) == ("reject", "bob", "logo visible")


@pytest.mark.parametrize("reviewer", [None, "", "   "])
def test_no_anonymous_review(session: Session, reviewer: str | None) -> None:
    # No name given: the review is the authenticated user's, never anonymous.
    who = resolve_reviewer(session, reviewer, free_names=True)
    assert who.name == who.authenticated == connection_identity(session) != ""
    shot = make_gated_shot(session, brand=make_brand(session, config={"reviewers": []}))
    with pytest.raises(ReviewError, match="may not review"):
        approve(session, [shot.id], who)
    assert shot.state == ShotState.pending_review
    assert _events(session, shot.id) == []


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("\u200b", "U+200B"),  # only a zero-width space: an anonymous approval by another name
        ("\u2060", "U+2060"),
        ("alice\nerror: forged line", "U+000A"),
        ("al\x1b[31mice", "U+001B"),
        ("\u202eecila", "U+202E"),  # a bidi override that prints "alice" backwards
        ("x" * 201, "longer than 200"),
    ],
)
def test_reviewer_names_are_printable_and_bounded(raw: str, problem: str) -> None:
    with pytest.raises(ReviewError, match=re.escape(problem)):
        clean_reviewer_name(raw)


def test_reviewer_name_is_trimmed_and_normalised() -> None:
    assert clean_reviewer_name("  Zoe\u0301  ") == "Zo\u00e9"  # NFC
    assert clean_reviewer_name("   ") is None


def test_claimed_name_must_be_the_authenticated_user(session: Session) -> None:
    me = connection_identity(session)
    assert resolve_reviewer(session, me.upper(), free_names=False) == Reviewer(me.upper(), me)
    with pytest.raises(ReviewError, match="is not the authenticated user"):
        resolve_reviewer(session, "someone-else", free_names=False)
    # Free names (the demo): the claimed name is recorded next to the authenticated one.
    assert resolve_reviewer(session, "alice", free_names=True) == Reviewer("alice", me)


def test_only_the_brands_reviewers_may_decide(session: Session) -> None:
    brand = make_brand(session, config={"reviewers": ["Alice"]})
    shot = make_gated_shot(session, brand=brand)
    with pytest.raises(ReviewError, match=r"'eve' may not review brand .*reviewers: Alice"):
        approve(session, [shot.id], R("eve"))
    with pytest.raises(ReviewError, match="may not review"):
        reject(session, [shot.id], R("eve"), "no")
    assert _events(session, shot.id) == []
    [event] = approve(session, [shot.id], Reviewer("alice", "uid-42"))  # names match caselessly
    assert (event.reviewer, event.authenticated_reviewer) == ("alice", "uid-42")


def test_a_decided_shot_names_who_decided(session: Session) -> None:
    shot = make_gated_shot(session)
    approve(session, [shot.id], R("alice"))
    with pytest.raises(ReviewError, match=rf"shot {shot.id}: already approved by 'alice'"):
        approve(session, [shot.id], R("bob"))


def test_gate_rejected_needs_override_and_reason(session: Session) -> None:
    shot = make_gated_shot(session, decision="rejected")
    with pytest.raises(ReviewError, match=rf"shot {shot.id}: the gate rejected it .*--override"):
        approve(session, [shot.id], R("alice"))
    with pytest.raises(ReviewError, match="--reason"):
        approve(session, [shot.id], R("alice"), override=True)
    assert _events(session, shot.id) == []
    approve(session, [shot.id], R("alice"), note="Nike score is a false positive", override=True)
    [event] = _events(session, shot.id)
    assert event.action == "override"
    assert event.note == "Nike score is a false positive"
    assert shot.state == ShotState.approved


def test_unknown_id_writes_nothing(session: Session) -> None:
    shot = make_gated_shot(session)
    with pytest.raises(ReviewError, match="shot 987654321: no such shot"):
        approve(session, [shot.id, 987654321], R("alice"))
    # the valid shot of the batch was not touched either
    assert shot.state == ShotState.pending_review
    assert _events(session, shot.id) == []


@pytest.mark.parametrize("state", ["planned", "generating", "generated", "failed", "published"])
def test_wrong_state_is_refused(session: Session, state: str) -> None:
    shot = make_gated_shot(session, state=state)
    with pytest.raises(ReviewError, match=rf"shot {shot.id}: cannot approve .*{state}"):
        approve(session, [shot.id], R("alice"), note="x", override=True)
    with pytest.raises(ReviewError, match=rf"shot {shot.id}: cannot reject .*{state}"):
        reject(session, [shot.id], R("alice"), "x")


def test_events_are_append_only_and_last_decision_wins(session: Session) -> None:
    shot = make_gated_shot(session)
    approve(session, [shot.id], R("alice"))
    reject(session, [shot.id], R("bob"), "wrong colour")  # approved, not yet published
    approve(session, [shot.id], R("carol"), note="colour is right after all", override=True)
    events = _events(session, shot.id)
    assert [(e.action, e.reviewer) for e in events] == [
        ("approve", "alice"),
        ("reject", "bob"),
        ("override", "carol"),
    ]
    assert current_review_state(events) == "approved" == shot.state
    # the derivation works on plain mappings too (exports, JSON)
    assert current_review_state([{"action": "approve"}, {"action": "reject"}]) == "rejected"
    assert current_review_state([]) is None


def test_list_shots_filters(session: Session) -> None:
    brand = make_brand(session)
    run1, run2 = make_import_run(session, brand), make_import_run(session, brand)
    a = make_gated_shot(session, brand=brand, import_run=run1)
    b = make_gated_shot(session, brand=brand, import_run=run2, template="lifestyle")
    c = make_gated_shot(session, brand=brand, import_run=run1, decision="rejected")
    other = make_gated_shot(session)

    ids = lambda shots: [s.id for s in shots]  # noqa: E731
    assert ids(list_shots(session, brand=brand.name)) == [a.id, b.id, c.id]
    assert ids(list_shots(session, brand=brand.name, status="pending_review")) == [a.id, b.id]
    assert ids(list_shots(session, brand=brand.name, status="rejected")) == [c.id]
    assert ids(list_shots(session, import_run=run1.id)) == [a.id, c.id]
    assert ids(list_shots(session, brand=brand.name, template="lifestyle")) == [b.id]
    assert other.id in pending_ids(session)
    assert pending_ids(session, brand=brand.name) == [a.id, b.id]


def test_escape_formula() -> None:
    for dangerous in ("=HYPERLINK(1)", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert escape_formula(dangerous) == "'" + dangerous
    assert escape_formula("plain") == "plain"
    assert escape_formula(-1.5) == -1.5  # numbers stay numbers
    assert escape_formula(42) == 42


def test_export_escapes_untrusted_catalog_text(session: Session) -> None:
    shot = make_gated_shot(
        session, sku="=cmd|' /C calc'!A0", title="x", prompt="@SUM(1+1) hero", decision="rejected"
    )
    reject_ok = make_gated_shot(session)
    reject(session, [reject_ok.id], R("-mallory"), "+bad")
    text = decisions_csv(session, status=None)
    rows = {r["shot_id"]: r for r in csv.DictReader(io.StringIO(text))}
    row = rows[str(shot.id)]
    # the variant sku starts with "=" as well: both are escaped
    assert row["sku"].startswith("'=cmd|")
    assert row["prompt"] == "'@SUM(1+1) hero"
    assert row["gate_decision"] == "rejected"
    assert row["gate_reasons"] == "competitor:Nike"
    r2 = rows[str(reject_ok.id)]
    assert (r2["reviewer"], r2["review_note"], r2["review_action"]) == (
        "'-mallory",
        "'+bad",
        "reject",
    )
    assert session.scalar(select(func.count(ReviewEvent.id))) >= 1
