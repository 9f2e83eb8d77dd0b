"""Removes competitor names and blocked terms from prompts before they are stored.

Catalog text is untrusted and often names other brands ("compatible with Nike
shoes"). A text-to-image model reads a brand name as a request for its logo, so
every competitor name, alias and blocked term is cut out (case-insensitive, whole
words, with possessives and trademark signs) and each removal is recorded on the shot.

Matching runs on NFKC-normalized text with invisible format characters dropped, so
full-width letters or zero-width joiners inside a name don't slip through.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pipeline.brand.config import BrandConfig

# Letters/digits on either side mean the term is part of a longer word ("Nikestown" stays).
_BEFORE = r"(?<![^\W_])"
_AFTER = r"(?![^\W_])"
# Possessive and trademark signs go with the name: "Nike's", "Nike®".
_SUFFIX = r"(?:['’]s)?(?:\s*[®™©])?"


@dataclass(frozen=True)
class Term:
    term: str  # the canonical name: the competitor's name or the blocked term
    kind: str  # "competitor" | "blocked"
    text: str  # the spelling this pattern matches (name or alias)


class SanitizeResult(NamedTuple):
    """The cleaned text and one record per removal: {term, kind, field, match, count}."""

    text: str
    removals: list[dict[str, Any]]


def normalize_text(text: str) -> str:
    """NFKC, minus invisible format characters (zero-width spaces, joiners, BOMs)."""
    if text.isascii():  # NFKC leaves ASCII as it is, and no ASCII character is a format one
        return text
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _term_pattern(text: str) -> str:
    # Words of a multi-word name may be joined by spaces, hyphens or nothing ("Under-Armour").
    words = [re.escape(w) for w in normalize_text(text).split()]
    return _BEFORE + r"[\s\-]*".join(words) + _SUFFIX + _AFTER


# tidy's rewrites, in order (compiled once: every planned prompt goes through them).
_TIDY = [
    (re.compile(r"[ \t]+"), " "),
    (re.compile(r"\s+([,.;:!?)\]])"), r"\1"),
    (re.compile(r"([(\[])\s+"), r"\1"),
    (re.compile(r"(?:,\s*){2,}"), ", "),
    (re.compile(r"^[\s,;:]+|[\s,;:]+$"), ""),
]


# Where any of them would change something: text with none of these is already tidy (each
# rewrite needs one of them, and none can make one appear where there was none).
_UNTIDY = re.compile(r"\t|  |\s[,.;:!?)\]]|[(\[]\s|,\s*,|^[\s,;:]|[\s,;:]$")


def tidy(text: str) -> str:
    """Close the gaps a removal leaves: doubled spaces and commas, space before punctuation."""
    if _UNTIDY.search(text) is None:
        return text
    for pattern, repl in _TIDY:
        text = pattern.sub(repl, text)
    return text


class Sanitizer:
    """Compiled once per brand; ``clean`` is linear in the text length."""

    def __init__(
        self, competitors: Iterable[tuple[str, Iterable[str]]] = (), blocked: Iterable[str] = ()
    ) -> None:
        terms: list[Term] = []
        # A term that is empty once normalized ("\u200b") would match between every two
        # characters; the brand check refuses those, and they are skipped here regardless.
        for name, aliases in competitors:
            for spelling in (name, *aliases):
                if normalize_text(spelling).split():
                    terms.append(Term(term=name, kind="competitor", text=spelling.strip()))
        for word in blocked:
            if normalize_text(word).split():
                terms.append(Term(term=word.strip(), kind="blocked", text=word.strip()))
        # Longest first, so "Nike Air" is removed whole before "Nike" could match part of it.
        terms.sort(key=lambda t: len(t.text), reverse=True)
        self.terms = terms
        self._regex: re.Pattern[str] | None = None
        if terms:
            alternation = "|".join(
                f"(?P<t{i}>{_term_pattern(t.text)})" for i, t in enumerate(terms)
            )
            self._regex = re.compile(alternation, re.IGNORECASE)

    @classmethod
    def from_brand(cls, brand: BrandConfig) -> Sanitizer:
        return cls(
            competitors=[(c.name, c.aliases) for c in brand.competitors],
            blocked=brand.blocked_terms,
        )

    def clean(self, text: str, field: str = "prompt") -> SanitizeResult:
        """``text`` without the terms, plus one removal record per (term, spelling found)."""
        text = normalize_text(text)
        if self._regex is None:
            return SanitizeResult(text=text, removals=[])
        counts: dict[tuple[str, str, str], int] = {}

        def _cut(m: re.Match[str]) -> str:
            term = self.terms[int(m.lastgroup[1:])]  # type: ignore[index]
            key = (term.term, term.kind, m.group(0))
            counts[key] = counts.get(key, 0) + 1
            return " "

        cleaned = self._regex.sub(_cut, text)
        if not counts:
            return SanitizeResult(text=text, removals=[])
        removals = [
            {"term": term, "kind": kind, "field": field, "match": match, "count": n}
            for (term, kind, match), n in counts.items()
        ]
        return SanitizeResult(text=tidy(cleaned), removals=removals)


def sanitize(text: str, brand: BrandConfig, field: str = "prompt") -> SanitizeResult:
    """One-off convenience; build a ``Sanitizer`` once when cleaning many texts."""
    return Sanitizer.from_brand(brand).clean(text, field=field)
