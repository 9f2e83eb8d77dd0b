"""Issue 31, small ones: the loser of a review race whose winner's approval was already
published is told who approved it, not "cannot approve a shot in state 'published'"."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from catalog.models import ShotState
from catalog.review import Reviewer, ReviewError, approve, reject
from tests.factories import make_gated_shot


def test_race_loser_after_publish_names_the_winner(session: Session) -> None:
    shot = make_gated_shot(session)
    approve(session, [shot.id], Reviewer("alice", "alice"))
    shot.state = ShotState.published.value  # what the winner's in-process publish does next
    session.flush()
    for act in (
        lambda: approve(session, [shot.id], Reviewer("bob", "bob")),
        lambda: reject(session, [shot.id], Reviewer("bob", "bob"), "no"),
    ):
        with pytest.raises(ReviewError) as err:
            act()
        assert str(err.value) == f"shot {shot.id}: already approved by 'alice' (and published)"
