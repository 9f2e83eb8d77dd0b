"""The prompt sanitizer: competitor names and blocked terms never reach a stored prompt."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.brand.config import BrandConfig
from pipeline.brand.sanitize import _TIDY, Sanitizer, sanitize, tidy


def _acme() -> BrandConfig:
    return BrandConfig.model_validate(
        {
            "name": "acme",
            "templates": {"t": {"prompt": "{{ product.title }}"}},
            "competitors": [
                {"name": "Nike", "aliases": ["Swoosh"]},
                {"name": "Globex", "aliases": ["Globex Corporation", "Globex Corp"]},
            ],
            "blocked_terms": ["replica", "knock off"],
        }
    )


def test_compatible_with_nike_does_not_ask_for_a_nike_logo() -> None:
    text, removals = sanitize("compatible with Nike shoes", _acme())
    assert text == "compatible with shoes"
    assert "nike" not in text.lower()
    assert removals == [
        {"term": "Nike", "kind": "competitor", "field": "prompt", "match": "Nike", "count": 1}
    ]


def test_case_possessive_trademark_and_alias_spellings_are_removed() -> None:
    s = Sanitizer.from_brand(_acme())
    text, removals = s.clean("NIKE's runner, a nike® sole and the swoosh look")
    assert "nike" not in text.lower() and "swoosh" not in text.lower() and "®" not in text
    assert text == "runner, a sole and the look"
    by_match = {r["match"]: r for r in removals}
    assert set(by_match) == {"NIKE's", "nike®", "swoosh"}
    assert all(r["term"] == "Nike" and r["kind"] == "competitor" for r in removals)


def test_whole_words_only() -> None:
    s = Sanitizer.from_brand(_acme())
    text, removals = s.clean("Nikesville snikers globexian")
    assert text == "Nikesville snikers globexian"
    assert removals == []


def test_unicode_disguises_do_not_slip_through() -> None:
    s = Sanitizer.from_brand(_acme())
    # Full-width letters (NFKC folds them) and a zero-width space inside the name.
    for disguised in ("ＮＩＫＥ trainers", "Ni\u200bke trainers"):
        text, removals = s.clean(disguised)
        assert text == "trainers", disguised
        assert removals[0]["term"] == "Nike"


def test_longest_alias_is_removed_whole_and_hyphens_join_words() -> None:
    s = Sanitizer.from_brand(_acme())
    text, removals = s.clean("made by Globex Corporation, styled like Globex-Corp gear")
    assert text == "made by, styled like gear"
    assert {r["match"] for r in removals} == {"Globex Corporation", "Globex-Corp"}
    assert {r["term"] for r in removals} == {"Globex"}


def test_blocked_terms_are_recorded_as_blocked_with_counts() -> None:
    s = Sanitizer.from_brand(_acme())
    text, removals = s.clean("Replica bag, not a knock-off, really a replica", field="title")
    assert text == "bag, not a, really a"
    assert sorted((r["match"], r["count"]) for r in removals) == [
        ("Replica", 1),
        ("knock-off", 1),
        ("replica", 1),
    ]
    assert all(r["kind"] == "blocked" and r["field"] == "title" for r in removals)


def test_no_terms_leaves_text_alone() -> None:
    text, removals = Sanitizer().clean("a plain  mug, white")
    assert (text, removals) == ("a plain  mug, white", [])


def test_tidy_closes_gaps() -> None:
    assert tidy(" ,  red , , blue mug ,") == "red, blue mug"


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=" \t\n\r,.;:!?)]([ab\u00a0", max_size=12))
def test_tidy_skips_only_text_its_rewrites_leave_alone(text: str) -> None:
    # The early return of tidy() must never skip a rewrite that would change the text.
    rewritten = text
    for pattern, repl in _TIDY:
        rewritten = pattern.sub(repl, rewritten)
    assert tidy(text) == rewritten
