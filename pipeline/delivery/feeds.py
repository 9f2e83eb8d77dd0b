"""Export writers: a Shopify product CSV (image rows) and a Merchant Center supplemental feed
(TSV or RSS 2.0 XML), streamed from rows ordered by product.

Shopify: one image row per current asset (``Handle``, ``Image Src``, ``Image Position``,
``Image Alt Text``), positions after the catalog's own images unless the channel puts
generated images first; a template in the channel's ``main`` slot also sets ``Variant
Image`` on the rows of the variants its shot was made for.

Merchant Center: one item per offer ``id`` (the variant SKUs a shot was made for, the
product key when there are none, or the channel's ``offer_id`` template), with
``image_link`` only from the ``main`` slot (empty by default: a generated scene must not
replace the product's own photo), ``additional_image_link`` (at most 10) and
``lifestyle_image_link``.

Templates in no slot of the channel are not exported to it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol, TextIO
from xml.sax.saxutils import escape

from pipeline.brand.config import BrandConfig, ChannelSpec
from pipeline.brand.templates import build_context
from pipeline.delivery.alt_text import AltTextError, compile_alt_text, render_alt_text
from pipeline.delivery.urls import public_url

MAX_ADDITIONAL = 10  # Merchant Center reads at most 10 additional_image_link values
SHOPIFY_COLUMNS = [
    "Handle",
    "Option1 Name",
    "Option1 Value",
    "Option2 Name",
    "Option2 Value",
    "Option3 Name",
    "Option3 Value",
    "Variant SKU",
    "Variant Image",
    "Image Src",
    "Image Position",
    "Image Alt Text",
]
GMC_COLUMNS = ["id", "image_link", "additional_image_link", "lifestyle_image_link"]


class FeedRow(Protocol):
    """One current asset (``catalog.delivery.exports.ExportRow`` has this shape)."""

    @property
    def product_id(self) -> int: ...
    @property
    def handle(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...
    @property
    def variant(self) -> Mapping[str, Any]: ...
    @property
    def template(self) -> str: ...
    @property
    def key(self) -> str: ...


class FeedError(ValueError):
    """A row the channel config cannot render (alt text, offer id): names the product."""


@dataclass
class FeedStats:
    images: int = 0  # image rows / links written
    products: int = 0
    items: int = 0  # Shopify variant rows, or Merchant Center items
    skipped: int = 0  # assets of templates in no slot of this channel
    urls: list[str] = field(default_factory=list)  # kept only when asked (tests, checks)


class _Renderer:
    """Alt text / offer id of a row, cached per (product, variant): they do not depend on
    the template."""

    def __init__(self, brand: BrandConfig, source: str | None, what: str) -> None:
        self.brand, self.what = brand, what
        self.template = None if source is None else compile_alt_text(source)
        self._cache: dict[tuple[int, str], str] = {}
        self._last: tuple[int, object, str] | None = None  # product, variant object, text

    def __call__(self, row: FeedRow) -> str | None:
        if self.template is None:
            return None
        last = self._last
        # A product's rows of one variant usually share the variant object: no key to build.
        if last is not None and last[0] == row.product_id and last[1] is row.variant:
            return last[2]
        options = row.variant.get("options") or {}
        ck = (row.product_id, repr(sorted(options.items())))
        hit = self._cache.get(ck)
        if hit is None:
            if len(self._cache) > 64:  # rows come by product: older entries are done with
                self._cache.clear()
            ctx = build_context({"key": row.handle, **row.data}, options, self.brand)
            try:
                hit = render_alt_text(self.template, ctx)
            except AltTextError as exc:
                raise FeedError(f"product {row.handle!r}: {self.what}: {exc}") from None
            self._cache[ck] = hit
        self._last = (row.product_id, row.variant, hit)
        return hit


def _by_product(rows: Iterable[FeedRow]) -> Iterator[list[FeedRow]]:
    for _, group in groupby(rows, key=lambda r: r.product_id):
        yield list(group)


def _variant_options(data: Mapping[str, Any], sku: str) -> list[str]:
    """Option1..3 name/value cells of the catalog variant with ``sku``."""
    names = [str(n) for n in (data.get("options") or [])][:3]
    opts: Mapping[str, Any] = {}
    for v in data.get("variants") or []:
        if isinstance(v, Mapping) and str(v.get("sku") or "") == sku:
            opts = v.get("options") or {}
            break
    cells: list[str] = []
    for i in range(3):
        name = names[i] if i < len(names) else ""
        cells += [name, str(opts.get(name, "")) if name else ""]
    return cells


@dataclass
class Exporter:
    brand: BrandConfig
    channel: str
    spec: ChannelSpec
    base_url: str
    keep_urls: bool = False
    stats: FeedStats = field(default_factory=FeedStats)

    def __post_init__(self) -> None:
        self.alt = _Renderer(self.brand, self.spec.alt_text, "alt_text")
        self.offer = _Renderer(self.brand, self.spec.offer_id, "offer_id")

    def _url(self, row: FeedRow) -> str:
        url = public_url(self.base_url, row.key)
        if self.keep_urls:
            self.stats.urls.append(url)
        return url

    def _slotted(self, group: list[FeedRow]) -> list[tuple[FeedRow, str]]:
        out = []
        for row in group:
            slot = self.spec.slots.slot_of(row.template)
            if slot is None:
                self.stats.skipped += 1
            else:
                out.append((row, slot))
        return out

    # --- Shopify ---------------------------------------------------------------------

    def shopify(self, rows: Iterable[FeedRow], out: TextIO) -> FeedStats:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(SHOPIFY_COLUMNS)
        for group in _by_product(rows):
            slotted = self._slotted(group)
            if not slotted:
                continue
            self.stats.products += 1
            first = slotted[0][0]
            own = len(first.data.get("images") or [])
            pos = 0 if self.spec.generated_first else own
            variant_image: dict[str, str] = {}
            for row, slot in slotted:
                pos += 1
                url = self._url(row)
                w.writerow([row.handle, *[""] * 8, url, pos, self.alt(row) or ""])
                self.stats.images += 1
                if slot == "main":
                    for sku in row.variant.get("skus") or []:
                        variant_image.setdefault(str(sku), url)
            for sku, url in variant_image.items():
                opts = _variant_options(first.data, sku)
                w.writerow([first.handle, *opts, sku, url, "", "", ""])
                self.stats.items += 1
        return self.stats

    # --- Merchant Center ---------------------------------------------------------------

    def _offers(self, group: list[FeedRow]) -> dict[str, dict[str, list[str]]]:
        offers: dict[str, dict[str, list[str]]] = {}
        for row, slot in self._slotted(group):
            ids = [self.offer(row)] if self.spec.offer_id else None
            ids = ids or [str(s) for s in row.variant.get("skus") or []] or [row.handle]
            url = self._url(row)
            for oid in ids:
                if oid:
                    offers.setdefault(oid, {"main": [], "additional": [], "lifestyle": []})
                    offers[oid][slot].append(url)
        return offers

    def _gmc_offers(self, rows: Iterable[FeedRow]) -> Iterator[tuple[str, str, list[str], str]]:
        """Per offer: its id, main link, additional links and lifestyle link."""
        for group in _by_product(rows):
            offers = self._offers(group)
            if offers:
                self.stats.products += 1
            for oid, s in offers.items():
                main, extra = s["main"][:1], s["main"][1:]
                life = s["lifestyle"][:1]
                more = (s["additional"] + extra + s["lifestyle"][1:])[:MAX_ADDITIONAL]
                self.stats.items += 1
                self.stats.images += len(main) + len(more) + len(life)
                yield oid, "".join(main), more, "".join(life)

    def gmc_items(self, rows: Iterable[FeedRow]) -> Iterator[list[str]]:
        """``GMC_COLUMNS`` values per offer."""
        for oid, main, more, life in self._gmc_offers(rows):
            yield [oid, main, ",".join(more), life]

    def gmc_tsv(self, rows: Iterable[FeedRow], out: TextIO) -> FeedStats:
        w = csv.writer(out, delimiter="\t", lineterminator="\n")
        w.writerow(GMC_COLUMNS)
        for item in self.gmc_items(rows):
            w.writerow(item)
        return self.stats

    def gmc_xml(self, rows: Iterable[FeedRow], out: TextIO) -> FeedStats:
        title = escape(f"{self.brand.label} shotline images ({self.channel})")
        out.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">\n'
            f"<channel>\n<title>{title}</title>\n"
        )
        write = out.write
        for oid, main, more, life in self._gmc_offers(rows):
            parts = ["<item><g:id>", _xml(oid), "</g:id>"]
            if main:
                parts += ["<g:image_link>", _xml(main), "</g:image_link>"]
            for u in more:
                parts += ["<g:additional_image_link>", _xml(u), "</g:additional_image_link>"]
            if life:
                parts += ["<g:lifestyle_image_link>", _xml(life), "</g:lifestyle_image_link>"]
            parts.append("</item>\n")
            write("".join(parts))
        out.write("</channel>\n</rss>\n")
        return self.stats


# The characters XML 1.0 forbids (C0 controls but tab, newline and carriage return).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NEEDS_WORK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f&<>]")


def _xml(text: str) -> str:
    """Text for an XML element: escaped, and without the control characters XML 1.0 forbids.
    Most values (percent-encoded URLs) need neither: one regex search says so."""
    if _NEEDS_WORK.search(text) is None:
        return text
    return escape(_FORBIDDEN.sub("", text))


WriteFn = Callable[[Iterable[FeedRow], TextIO], FeedStats]
