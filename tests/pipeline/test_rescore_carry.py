"""A rescore re-decides CLIP scores; checks it doesn't redo (packshot fidelity) are carried
from the previous pass, so a product that failed fidelity is never cleared by a rescore."""

from __future__ import annotations

from pipeline.gate.rescore import with_carried_checks
from pipeline.types import FilterDecision

CLIP = [{"name": "gore", "kind": "safety", "score": 0.1, "threshold": 0.3, "triggered": False}]


def _passed() -> FilterDecision:
    return FilterDecision("pending_review", list(CLIP), [], "acme:v1:a.b", "tiny-clip")


def test_a_failed_fidelity_check_keeps_the_shot_rejected() -> None:
    failed = {"name": "product_psnr_db", "kind": "fidelity", "score": 31.0, "triggered": True}
    reason = "product fidelity: PSNR inside the product is 31.0 dB"
    dec = with_carried_checks(_passed(), [*CLIP, failed], [reason, "gore: 0.9"])
    assert dec.decision == "rejected"
    assert dec.scores == [*CLIP, failed] and dec.reasons == [reason]


def test_passed_fidelity_scores_are_carried_and_text_shots_unchanged() -> None:
    ok = {"name": "product_pixels_changed", "kind": "fidelity", "score": 0.0, "triggered": False}
    dec = with_carried_checks(_passed(), [*CLIP, ok], [])
    assert dec.decision == "pending_review" and dec.scores[-1] == ok
    assert with_carried_checks(_passed(), list(CLIP), []) == _passed()
