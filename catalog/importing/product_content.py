"""One product's normalized content: assembled from rows, merged, hashed, serialized.

The JSON is the ``product_revisions.data`` contract shared with planning and lineage:
``{key, title, body_html, vendor, product_type, tags, options, images,
variants: [{sku, options, price, image, line}], extra}``.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

_PLACEHOLDER = re.compile(r"Option([1-3])")
SHORT_CHARS = 40
SHOWN_LINES = 20  # line numbers listed in one warning; the rest are counted


# Feeds that escape text twice (``&amp;nbsp;``, ``5&amp;quot; x 7&amp;quot;``) or more: a
# bound on the rounds, so a crafted ``&amp;amp;amp;...`` can't cost more than this.
MAX_UNESCAPE_ROUNDS = 8


def unescape(value: str) -> str:
    """``value`` with HTML entities decoded until it no longer changes (double-encoded feeds
    would otherwise put ``&nbsp;`` and ``&quot;`` in prompts), then stripped."""
    for _ in range(MAX_UNESCAPE_ROUNDS):
        if "&" not in value:
            break
        decoded = html.unescape(value)
        if decoded == value:
            break
        value = decoded
    return value.strip()


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:SHOWN_LINES]))
    more = len(lines) - SHOWN_LINES
    return f"{shown} and {more} more" if more > 0 else shown


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHORT_CHARS else text[: SHORT_CHARS - 1] + "…"


# One encoder, built once: json.dumps with options builds a new one on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass
class ProductAcc:
    """A product being assembled from its rows (or merged from non-adjacent fragments)."""

    key: str
    line: int
    title: str = ""
    body_html: str = ""
    vendor: str = ""
    product_type: str = ""
    tags: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    # Shopify option names by column position (Option1..3 Name); not part of the data.
    slots: list[str] = field(default_factory=list)
    placeholders: bool = False  # a variant came before the option names were known
    # Rows that disagree with an earlier row of the same product (not part of the data):
    # each names both lines and which one was kept. The importer records them as warnings.
    conflicts: list[str] = field(default_factory=list)
    fields_line: int = 0  # the line the product-level fields came from
    # Indexes over the variants (not part of the data): repeats are found in O(1) per row.
    _seen: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)
    _repeats: dict[tuple[Any, ...], list[int]] = field(default_factory=dict, repr=False)
    _by_sku_options: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict, repr=False)
    _sku_lines: dict[str, list[int]] = field(default_factory=dict, repr=False)
    # Each variant's part of the content hash, built once by ``add_variant`` (it has them at
    # hand); recomputed in ``content_hash`` when the variants were renamed or merged.
    _hash_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)

    def check_fields(self, line: int, values: dict[str, str]) -> None:
        """A later row repeating the product's own fields: note every field it contradicts."""
        for name, value in values.items():
            value, kept = unescape(value), getattr(self, name)
            if value and kept and value != kept:
                self.conflicts.append(
                    f"line {line}: {self.key!r} {name} {_short(value)} differs from line "
                    f"{self.fields_line or self.line} ({_short(kept)}); line "
                    f"{self.fields_line or self.line} was kept"
                )

    def add_variant(self, variant: dict[str, Any], *, decoded: bool = False) -> None:
        """Append a variant. A row repeating an earlier variant exactly (same SKU, options,
        price and image) is dropped; a second row for the same variant that differs (prices 1
        and 99 can't both be right) is dropped with a note naming both lines and what differs;
        a SKU shared by variants with different options is kept. Repeats are noted once per
        repeated value (``warnings``), not once per pair of rows: 2,048 variants sharing
        "N/A" are one note, not two million. When the SKU is the product's own key (generic
        files keyed by SKU) or empty, exact repeats are kept, and noted. ``decoded``: the
        option names and values are ``unescape``d already (the Shopify reader decodes each
        distinct cell once)."""
        sku = variant.get("sku")
        options = variant.get("options") or {}
        if not decoded:
            options = {unescape(k): unescape(v) for k, v in options.items()}
        variant["options"] = options
        opts = tuple(sorted(options.items()))
        whole = (sku or "", opts, variant.get("price"), variant.get("image"))
        first = self._seen.setdefault(whole, variant["line"])
        if first != variant["line"]:
            self._repeats.setdefault(whole, [first]).append(variant["line"])
        hash_row = (whole[0], opts, whole[2] or "", whole[3] or "")
        if not sku or sku == self.key:  # keyed by SKU: the SKU doesn't tell variants apart
            self.variants.append(variant)  # an exact repeat is kept (and noted), as it was
            self._hash_rows.append(hash_row)
            return
        if first != variant["line"]:  # an exact repeat of a variant SKU: one is enough
            return
        earlier = self._by_sku_options.get((sku, opts))
        if earlier is not None:
            first_line = earlier["line"]
            diff = [
                f"{k} {_short(variant.get(k))} vs {_short(earlier.get(k))}"
                for k in ("price", "image")
                if variant.get(k) != earlier.get(k)
            ]
            self.conflicts.append(
                f"line {variant['line']}: conflicting duplicate of SKU {sku!r} from line "
                f"{first_line} ({'; '.join(diff)}); line {first_line} was kept"
            )
            return
        self._by_sku_options[(sku, opts)] = variant
        self._sku_lines.setdefault(sku, []).append(variant["line"])
        self.variants.append(variant)
        self._hash_rows.append(hash_row)

    def warnings(self) -> list[str]:
        """Every note on this product's rows: conflicts, then one per repeated value."""
        notes = list(self.conflicts)
        for (sku, _, _, _), lines in self._repeats.items():
            if sku and sku != self.key:
                what, kept = f"SKU {sku!r}", f"line {lines[0]} was kept"
            else:  # keyed by SKU (or no SKU): the rows stay identical variants
                what, kept = repr(self.key), "all were kept as identical variants"
            notes.append(
                f"{what}: line(s) {_lines(lines[1:])} repeat line {lines[0]} exactly; {kept}"
            )
        for sku, lines in self._sku_lines.items():
            if len(lines) > 1:
                notes.append(
                    f"SKU {sku!r} is shared by {len(lines)} variants of {self.key!r} with "
                    f"different options (lines {_lines(lines)}); all were kept"
                )
        return notes

    # Shopify "Image Position" by URL; the images are put in this order before hashing.
    positions: dict[str, int] = field(default_factory=dict)

    def add_image(self, url: str, position: int | None = None) -> None:
        if url and url not in self.images:
            self.images.append(url)
            if position is not None:
                self.positions[url] = position

    def _order_images(self) -> None:
        """Images with a position first, by position; the rest after, in file order."""
        order = self.positions
        self.images.sort(key=lambda url: order.get(url, 1 << 30))
        self.positions = {}

    def add_option(self, name: str) -> None:
        name = unescape(name)
        if name not in self.options:
            self.options.append(name)

    def fill(self, title: str, body: str, vendor: str, ptype: str, tags: str) -> None:
        """Product-level fields: the first non-empty value wins."""
        if not self.fields_line and (title or body or vendor or ptype):
            self.fields_line = self.line
        # The body stays HTML (its tags are stripped where a prompt uses it); its entities
        # are decoded like the plain fields', so a double-encoded one is no longer literal.
        title, body, vendor, ptype = map(unescape, (title, body, vendor, ptype))
        self.title = self.title or title
        self.body_html = self.body_html or body
        self.vendor = self.vendor or vendor
        self.product_type = self.product_type or ptype
        if tags and not self.tags:
            self.tags = sorted({t for t in map(unescape, tags.split(",")) if t})

    def merge(self, other: ProductAcc) -> None:
        """Fold a later fragment of the same product (rows that were not adjacent)."""
        self.line = min(self.line, other.line)
        self.fill(other.title, other.body_html, other.vendor, other.product_type, "")
        if not self.tags:
            self.tags = other.tags
        for name in other.options:
            self.add_option(name)
        for url in other.images:
            self.add_image(url)
        self.variants.extend(other.variants)
        for k, v in other.extra.items():
            self.extra.setdefault(k, v)
        self.placeholders = True  # from_data cannot tell; the check is cheap

    def _name_placeholder_options(self) -> None:
        """Shopify continuation rows that came before their product row could not know the
        option names and used ``OptionN``; name them once the product row is known."""
        real = [o for o in self.options if not _PLACEHOLDER.fullmatch(o)]
        if not real:
            return
        self.options = real
        for var in self.variants:
            opts = var["options"]
            if any(_PLACEHOLDER.fullmatch(k) for k in opts):
                renamed = {}
                for k, v in opts.items():
                    m = _PLACEHOLDER.fullmatch(k)
                    idx = int(m.group(1)) - 1 if m else -1
                    renamed[real[idx] if m and idx < len(real) else k] = v
                var["options"] = renamed

    def data(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "body_html": self.body_html,
            "vendor": self.vendor,
            "product_type": self.product_type,
            "tags": self.tags,
            "options": self.options,
            "images": self.images,
            "variants": self.variants,
            "extra": self.extra,
        }

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the content without line numbers and with the
        variants in a fixed order, so moving rows around in the file makes no new revision."""
        rows: list[tuple[Any, ...]] | None = self._hash_rows
        if self.placeholders:
            self._name_placeholder_options()
            rows = None  # options may have been renamed
        if self.positions:
            self._order_images()
        if rows is None or len(rows) != len(self.variants):  # merged, or read from data
            rows = [
                (v["sku"] or "", sorted(v["options"].items()), v["price"] or "", v["image"] or "")
                for v in self.variants
            ]
        # (A tuple of option pairs sorts and encodes as the list of them does.)
        variants = sorted(rows)
        doc = [
            self.key,
            self.title,
            self.body_html,
            self.vendor,
            self.product_type,
            self.tags,
            self.options,
            self.images,
            variants,
            sorted(self.extra.items()),
        ]
        return hashlib.sha256(_ENCODER.encode(doc).encode()).hexdigest()

    def to_json(self) -> str:
        return _ENCODER.encode(self.data())

    def encode(self) -> tuple[str, str]:
        """``(content_hash, data JSON)``."""
        return self.content_hash(), self.to_json()

    @classmethod
    def from_data(cls, data: dict[str, Any], line: int) -> ProductAcc:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "line"}
        fields["variants"] = list(fields.get("variants", []))
        return cls(line=line, **fields)
