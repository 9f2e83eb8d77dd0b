"""Merchant Center feeds as XML: RSS 2.0 (``<item>``) and Atom (``<entry>``), ``g:`` namespace.

Parsed as a stream with defusedxml's expat parser: entity declarations (the billion laughs),
external entities and DTD fetches are refused, so nothing reaches the network and nothing
expands. Only the item being read is held. Each item becomes one row of the same shape a
tab-separated Merchant Center feed has (column = the element's local name), so the ``gmc``
normalizer reads both. The file is read twice: once for the set of field names (the header),
once for the rows, each named by the line of its ``<item>``/``<entry>`` tag.

- a Google-namespace element wins over a plain one of the same name (Atom's own ``<id>``
  is a URI, ``<g:id>`` is the item id);
- Atom's ``<link href>`` is the link, ``<summary>``/``<content>`` the description;
- a repeated element (several ``<g:additional_image_link>``) is a comma list, as in the
  text feed; an element with children (``<g:shipping>``) is its children's text joined by
  ``:``, as in the text feed's ``US:CA:Overnight:16.00 USD``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from catalog.importing.csv_source import (
    BLOCK,
    CatalogFileError,
    Chunk,
    RowError,
    SourceInfo,
    make_chunk,
)

GOOGLE_NS = "http://base.google.com/ns/1.0"
ITEM_TAGS = frozenset({"item", "entry"})
ATOM_ALIASES = {"summary": "description", "content": "description"}
# Field names beyond this many are ignored (with a warning): a feed whose every item invents
# new element names would otherwise grow the header without bound.
MAX_FIELDS = 512
SNIFF_BYTES = 4096
_DECLARED = re.compile(rb"""<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_PART = "\x00"  # separates a nested element's children (XML text can't hold a NUL)


def looks_like_xml(first: bytes) -> bool:
    """An XML feed rather than a CSV: the first non-blank character opens a tag."""
    head = first[:SNIFF_BYTES].lstrip(b"\xef\xbb\xbf").lstrip()
    return head.startswith((b"<?xml", b"<rss", b"<feed", b"<!--"))


def declared_encoding(first: bytes) -> str:
    m = _DECLARED.search(first[:SNIFF_BYTES])
    return m.group(1).decode("ascii").lower() if m else "utf-8"


@dataclass
class _Item:
    line: int
    values: dict[str, str] = field(default_factory=dict)
    google: set[str] = field(default_factory=set)  # fields set by a g: element
    too_long: str | None = None


class _ItemTarget:
    """An expat target: builds one ``_Item`` at a time and hands it to ``emit``."""

    def __init__(self, line: Callable[[], int], emit: Callable[[_Item], None], cap: int) -> None:
        self._line = line
        self._emit = emit
        self._cap = cap
        self.item: _Item | None = None
        self.level = 0
        self.name = ""
        self.is_google = False
        self.buf: list[str] = []
        self.size = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        ns, _, local = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
        if self.item is None:
            if local in ITEM_TAGS:
                self.item, self.level = _Item(self._line()), 0
            return
        self.level += 1
        if self.level == 1:
            self.is_google = ns == GOOGLE_NS
            self.name = local if self.is_google else ATOM_ALIASES.get(local, local)
            self.buf, self.size = [], 0
            if local == "link" and attrib.get("href"):
                self.data(attrib["href"])
        else:
            self.buf.append(_PART)

    def data(self, text: str) -> None:
        if self.item is None or self.level < 1:
            return
        self.size += len(text)
        if self.size > self._cap:
            self.item.too_long = self.item.too_long or self.name
            return
        self.buf.append(text)

    def end(self, tag: str) -> None:
        item = self.item
        if item is None:
            return
        if self.level == 0:
            self.item = None
            self._emit(item)
            return
        if self.level == 1:
            self._store(item)
        else:
            self.buf.append(_PART)
        self.level -= 1

    def _store(self, item: _Item) -> None:
        parts = (p.strip() for p in "".join(self.buf).split(_PART))
        value = ":".join(p for p in parts if p)
        name, values = self.name, item.values
        if self.is_google and name not in item.google:
            item.google.add(name)
            values[name] = value  # the first g: element replaces any plain one
        elif not self.is_google and name in item.google:
            return  # a plain element never overrides the g: one
        elif name in values:  # a repeated element: a comma list, as in the text feed
            values[name] = ",".join(v for v in (values[name], value) if v)
        else:
            values[name] = value

    def close(self) -> None:
        return None


def _parse(info: SourceInfo, emit: Callable[[_Item], None], cap: int) -> Iterator[int]:
    """Parse the file, calling ``emit`` per item; yields the bytes read after each block."""
    parser: Any = None

    def line() -> int:
        return int(parser.parser.CurrentLineNumber)

    target = _ItemTarget(line, emit, cap)
    parser = DefusedXMLParser(target=target, forbid_dtd=False)
    done = 0
    try:
        with info.path.open("rb") as fh:
            while block := fh.read(BLOCK):
                parser.feed(block)
                done += len(block)
                yield done
            parser.close()
    except ParseError as exc:
        where = ":".join(map(str, getattr(exc, "position", ()) or ()))
        reason = str(exc).split(": line", 1)[0]
        raise CatalogFileError(f"{info.path}:{where}: not well-formed XML ({reason})") from None
    except DefusedXmlException as exc:
        raise CatalogFileError(
            f"{info.path}:{line()}: the feed declares entities or external references, which "
            f"are refused ({type(exc).__name__})"
        ) from None


def xml_header(info: SourceInfo, max_field_chars: int) -> list[str]:
    """Every field name the feed's items use, in order of first use (pass one)."""
    names: dict[str, None] = {}
    items = 0

    def emit(item: _Item) -> None:
        nonlocal items
        items += 1
        for name in item.values:
            if len(names) < MAX_FIELDS:
                names.setdefault(name)

    for _ in _parse(info, emit, max_field_chars):
        pass
    if not items:
        raise CatalogFileError(f"{info.path}: an XML file with no <item> or <entry> elements")
    if len(names) >= MAX_FIELDS:
        info.warnings.append(
            f"{info.path}: the items use more than {MAX_FIELDS} element names; the rest "
            "were ignored"
        )
    return list(names)


def iter_xml_chunks(
    info: SourceInfo,
    chunk_rows: int,
    max_field_chars: int,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Chunk]:
    """The items after ``xml_header`` settled ``info.header``, as chunks of string rows."""
    header = info.header
    pos = {name: i for i, name in enumerate(header)}
    records: list[list[str]] = []
    lines: list[int] = []
    errors: list[RowError] = []
    rows = 0

    def emit(item: _Item) -> None:
        nonlocal rows
        rows += 1
        if item.too_long:
            reason = f"field is over {max_field_chars} characters"
            errors.append(RowError(item.line, item.too_long, reason, None))
            return
        rec = [""] * len(header)
        for name, value in item.values.items():
            if name in pos:
                rec[pos[name]] = value
        records.append(rec)
        lines.append(item.line)

    nbytes = 0
    for nbytes in _parse(info, emit, max_field_chars):
        if len(records) >= chunk_rows:
            yield make_chunk(records, lines, errors, nbytes, rows)
            records, lines, errors, rows = [], [], [], 0
        if on_progress:
            on_progress(nbytes)
    if records or errors or rows:
        yield make_chunk(records, lines, errors, nbytes, rows)
