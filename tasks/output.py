"""Terminal output for the CLI: user and catalog text is printed as text, never as markup.

Anything a catalog, a brand file or a user typed (titles, SKUs, file names, reviewer names,
lineage refs) can hold Rich markup (``[/]``), emoji codes (``:abc:``) or terminal control
sequences (ESC/OSC, bidi overrides, a newline that forges an ``error:`` line). ``SafeConsole``
turns markup and emoji off and shows every control or format character as a visible escape
(``\\x1b``, ``\\u202e``, ``\\n``), so no string reaches the terminal raw. Styling of our own
words goes through ``rich.text.Text`` objects, which carry styles without parsing the text.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from rich.console import Console
from rich.style import Style
from rich.text import Text

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def neutralize(text: str) -> str:
    """``text`` with control and format characters replaced by visible escapes."""
    if text.isprintable():  # the fast path: nothing to escape (spaces are printable)
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )


class SafeConsole(Console):
    """A Console for untrusted text: no markup, no emoji codes, control characters escaped."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        kwargs.setdefault("highlight", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        # Every plain string a print or a table cell renders passes through here.
        return super().render_str(neutralize(text), **kwargs)


def styled(*parts: tuple[str, str | Style | None] | str) -> Text:
    """Our own styled words plus untrusted values: ``styled(("error:", "bold red"), " ", msg)``.

    Each part is appended as plain text (escaped), so a value can't open or close a style.
    """
    out = Text()
    for part in parts:
        text, style = (part, None) if isinstance(part, str) else part
        out.append(neutralize(text), style=style or "")
    return out
