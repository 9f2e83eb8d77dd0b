"""The CLI's consoles print untrusted text as text: no markup, no emoji, no raw escapes."""

from __future__ import annotations

import io

import pytest
from rich.table import Table

from tasks.output import SafeConsole, neutralize, styled

HOSTILE = [
    ("Size [/cm]", "Size [/cm]"),  # was a MarkupError
    ("[bold red]x[/]:x:.csv", "[bold red]x[/]:x:.csv"),  # was printed as styled "x"
    ("shot:abc", "shot:abc"),
    (":smile:", ":smile:"),  # was an emoji
    ("a\x1b[2Jb", "a\\x1b[2Jb"),  # clear-screen
    ("x\x1b]8;;http://evil\x07y", "x\\x1b]8;;http://evil\\x07y"),  # OSC 8 hyperlink
    ("bob\nerror: forged", "bob\\x0aerror: forged"),  # a forged error line
    ("\u202eecila", "\\u202eecila"),  # bidi override
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("Café Crème 𝔘", "Café Crème 𝔘"),  # ordinary Unicode stays as it is
]


def _render(*objs: object) -> str:
    buf = io.StringIO()
    console = SafeConsole(file=buf, width=200, force_terminal=False)
    console.print(*objs)
    return buf.getvalue()


@pytest.mark.parametrize(("raw", "shown"), HOSTILE)
def test_plain_prints_show_text_as_text(raw: str, shown: str) -> None:
    assert _render(raw) == shown + "\n"
    assert neutralize(raw) == shown


@pytest.mark.parametrize(("raw", "shown"), HOSTILE)
def test_table_cells_and_styled_messages_too(raw: str, shown: str) -> None:
    table = Table()
    table.add_column("v")
    table.add_row(raw)
    out = _render(table)
    assert shown in out and "\x1b" not in out and "\u202e" not in out
    message = styled(("error:", "bold red"), " ", raw)
    assert message.plain == f"error: {shown}"
    assert "\x1b" not in _render(message)  # no terminal: no styles, and no raw ESC from raw
