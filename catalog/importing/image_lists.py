"""Image cells that hold a list: ``Images`` in WooCommerce, a generic image column, Merchant
Center's ``additional_image_link``.

Commas separate the references. A URL may hold commas itself (``w_100,h_100`` in an image
CDN's transformation path), so where the cell holds URLs it is split only at a comma that
starts a new URL (``, https://``); a cell of bare paths is split at every comma. A part that
still glues two URLs with another separator (``a.jpg https://...``, ``a.jpg;https://...``,
``a.jpg|https://...``) is not one reference: it is skipped and counted for a warning, rather
than kept as one bogus URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
_URL_COMMA = re.compile(rf",\s*(?={_SCHEME})")
_GLUED = re.compile(rf"[\s;|]+{_SCHEME}")
SHOWN = 10  # lines named in one warning
SHORT = 60


def split_images(cell: str) -> tuple[list[str], list[str]]:
    """``(references, parts that are not one reference)`` of an image-list cell."""
    cell = cell.strip()
    if not cell:
        return [], []
    parts = _URL_COMMA.split(cell) if "://" in cell else cell.split(",")
    good: list[str] = []
    bad: list[str] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        (bad if _GLUED.search(part) else good).append(part)
    return good, bad


@dataclass
class BadImageCells:
    """Image cells with parts that could not be read, per column: one warning per column."""

    lines: dict[str, list[int]] = field(default_factory=dict)
    example: dict[str, str] = field(default_factory=dict)

    def note(self, column: str, line: int, parts: list[str]) -> None:
        self.lines.setdefault(column, []).append(line)
        self.example.setdefault(column, parts[0])

    def warnings(self) -> list[str]:
        out = []
        for column, lines in self.lines.items():
            shown = ", ".join(map(str, lines[:SHOWN]))
            more = f" and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
            example = self.example[column]
            if len(example) > SHORT:
                example = example[: SHORT - 1] + "…"
            out.append(
                f"column {column!r}: {len(lines)} image cell(s) hold text that is not a "
                f"comma-separated list of references (line(s) {shown}{more}; e.g. "
                f"{example!r}); those parts were skipped"
            )
        return out
