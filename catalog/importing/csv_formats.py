"""Catalog formats: which column is the product key, and how rows become products.

Four formats share one product shape (the ``product_revisions.data`` contract):

- **shopify**: a product export. The first row of a Handle carries the product; the
  following rows with the same Handle carry only variant columns and/or an image
  (continuation rows). They belong to the product and are not errors.
- **gmc**: a Google Merchant Center feed. Each row is an item (a variant); items share a
  product through ``item_group_id``, else the item ``id`` is the product.
- **woocommerce**: WooCommerce's product export: variation rows name their product in
  ``Parent``, option names sit in ``Attribute N name`` columns (see ``woocommerce``).
- **generic**: any CSV, described by the brand's ``column_map`` (our field -> CSV column).

An image column that may hold a list (generic, WooCommerce ``Images``, Merchant Center
``additional_image_link``) is split (``image_lists``); parts that are not one reference
are skipped with one warning per column.

Catalog text is untrusted: values are copied as strings, never interpreted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

import pandas as pd

from catalog.importing import woocommerce
from catalog.importing.csv_source import RowError
from catalog.importing.image_lists import BadImageCells, split_images
from catalog.importing.product_content import ProductAcc, unescape
from pipeline.brand.config import BrandConfig

FORMATS = ("shopify", "woocommerce", "gmc", "generic")
MAX_KEY_CHARS = 255

# Stock and availability change daily and never change an image: they are left out of
# the product content, so a stock update does not create a revision (and new shots).
VOLATILE = frozenset(
    {
        "variant inventory qty",
        "variant inventory tracker",
        "variant inventory policy",
        "inventory quantity",
        "availability",
        "availability_date",
        "sell_on_google_quantity",
        "quantity",
        "sale_price_effective_date",
        "expiration_date",
        # WooCommerce
        "stock",
        "in stock?",
        "backorders allowed?",
        "low stock amount",
        "date sale price starts",
        "date sale price ends",
    }
)


@dataclass
class Layout:
    """Column positions for one file. ``key_cols``: the first non-empty one is the key."""

    fmt: str
    header: list[str]
    key_cols: list[int]
    key_label: str

    def col(self, *names: str) -> int | None:
        return _find(self.header, *names)


def _norm(name: str) -> str:
    name = name.strip().lower()
    return name[2:] if name.startswith("g:") else name


def _find(header: Sequence[str], *names: str) -> int | None:
    wanted = [_norm(n) for n in names]
    normed = [_norm(h) for h in header]
    for w in wanted:
        if w in normed:
            return normed.index(w)
    return None


def _generic_key(brand: BrandConfig) -> str | None:
    return brand.column_map.get("key") or brand.column_map.get("sku")


def detect_layout(header: list[str], brand: BrandConfig, fmt: str = "auto") -> Layout | None:
    """The layout for ``header`` in ``fmt`` (or the first format that fits); None if none."""
    if fmt != "auto":
        order: tuple[str, ...] = (fmt,)
    elif brand.column_map:
        # A brand that maps its own columns most likely sends its own CSVs, which may well
        # have "id" and "title" columns too: try the mapping before Google Merchant.
        order = ("shopify", "woocommerce", "generic", "gmc")
    else:
        order = FORMATS
    for name in order:
        if name == "shopify":
            handle = _find(header, "Handle")
            if handle is not None and (fmt != "auto" or _find(header, "Title", "Variant SKU")):
                return Layout("shopify", header, [handle], "Handle")
        elif name == "woocommerce":
            sku, parent = _find(header, "SKU"), _find(header, "Parent")
            typed = _find(header, "Type") is not None
            named = fmt != "auto" or _find(header, "Name") is not None
            if sku is not None and parent is not None and typed and named:
                return Layout("woocommerce", header, [sku, parent], WOO_KEY)
        elif name == "gmc":
            ident = _find(header, "id")
            group = _find(header, "item_group_id")
            if ident is not None or (fmt != "auto" and group is not None):
                keys = [c for c in (group, ident) if c is not None]
                if fmt != "auto" or _find(header, "title", "item_group_id", "image_link"):
                    return Layout("gmc", header, keys, "item_group_id/id")
        elif name == "generic":
            col = _generic_key(brand)
            pos = _find(header, col) if col else None
            if pos is not None and col is not None:
                return Layout("generic", header, [pos], col)
    return None


def missing_key_message(header: list[str], brand: BrandConfig, fmt: str) -> str:
    found = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
    if fmt == "shopify":
        want = "no 'Handle' column"
    elif fmt == "gmc":
        want = "no 'id' or 'item_group_id' column"
    elif fmt == "woocommerce":
        want = "no 'Type', 'SKU' and 'Parent' columns (a WooCommerce product export has them)"
    elif fmt == "generic":
        col = _generic_key(brand)
        want = (
            f"no {col!r} column (the sku of brand {brand.name!r} column_map)"
            if col
            else f"brand {brand.name!r} has no column_map 'sku' (or 'key') entry"
        )
    else:
        want = (
            "no key column (Shopify: Handle; Google Merchant: id; "
            f"generic: the sku of brand {brand.name!r} column_map)"
        )
    return f"{want} in the header; found: {found}"


def layout_warnings(layout: Layout) -> list[str]:
    """What the file's columns will silently lose: a Merchant Center-like feed without
    ``image_link`` whose images sit in a column of another name reads no main image."""
    if layout.fmt != "gmc" or layout.col("image_link") is not None:
        return []
    others = [
        h
        for h in layout.header
        if "image" in _norm(h) and _norm(h) not in ("additional_image_link", "image_link")
    ]
    if not others:
        return []
    return [
        f"no 'image_link' column, so no main image is read; column(s) {others} were not "
        "read as images (Merchant Center names the main image 'image_link')"
    ]


def _present(*cols: int | None) -> frozenset[int]:
    return frozenset(c for c in cols if c is not None)


@dataclass(frozen=True)
class ProductColumns:
    """Where one file keeps the product fields (None: the file has no such column)."""

    title: int | None
    body: int | None
    vendor: int | None
    ptype: int | None
    tags: int | None
    sku: int | None
    price: int | None
    image: int | None

    def used(self, layout: Layout) -> frozenset[int]:
        """Columns read as fields or describing one row: the rest go to the product's extra."""
        named = (self.title, self.body, self.vendor, self.ptype, self.tags)
        return _present(*named, self.sku, self.price, self.image)


@dataclass(frozen=True)
class ShopifyColumns(ProductColumns):
    """A Shopify export: a product's first row, then variant and image rows."""

    options: tuple[tuple[int | None, int | None], ...]  # (OptionN Name, OptionN Value), N=1..3
    variant_image: int | None
    image_position: int | None

    @classmethod
    def from_layout(cls, layout: Layout, brand: BrandConfig) -> ShopifyColumns:
        h = layout.col
        return cls(
            title=h("Title"),
            body=h("Body (HTML)", "Body HTML", "Body"),
            vendor=h("Vendor"),
            ptype=h("Type", "Product Type"),
            tags=h("Tags"),
            sku=h("Variant SKU"),
            price=h("Variant Price"),
            image=h("Image Src"),
            options=tuple((h(f"Option{i} Name"), h(f"Option{i} Value")) for i in (1, 2, 3)),
            variant_image=h("Variant Image"),
            image_position=h("Image Position"),
        )

    def used(self, layout: Layout) -> frozenset[int]:
        options = (c for pair in self.options for c in pair)
        # Variant and image columns describe one row, not the product.
        per_row = (
            i
            for i, name in enumerate(layout.header)
            if _norm(name).startswith(("variant ", "image ")) or _norm(name) == "cost per item"
        )
        return super().used(layout) | _present(self.variant_image, *options, *per_row)


@dataclass(frozen=True)
class ItemColumns(ProductColumns):
    """A feed of items: every row is one variant of its product."""

    options: tuple[tuple[str, int], ...]  # (option name, column) of the options found
    more_images: int | None  # comma-separated additional image URLs

    def used(self, layout: Layout) -> frozenset[int]:
        options = (c for _, c in self.options)
        return super().used(layout) | _present(self.more_images, *options)


@dataclass(frozen=True)
class MerchantColumns(ItemColumns):
    """A Google Merchant Center feed (``g:`` prefixes are ignored)."""

    @classmethod
    def from_layout(cls, layout: Layout, brand: BrandConfig) -> MerchantColumns:
        h = layout.col
        labels = ("Color", "Size", "Material", "Pattern")
        return cls(
            title=h("title"),
            body=h("description"),
            vendor=h("brand"),
            ptype=h("product_type"),
            tags=None,
            sku=h("id"),
            price=h("price"),
            image=h("image_link"),
            options=tuple((label, c) for label in labels if (c := h(label.lower())) is not None),
            more_images=h("additional_image_link"),
        )

    def used(self, layout: Layout) -> frozenset[int]:
        # Item-level columns: a product's "extra" must not carry its first item's values.
        per_item = ("item_group_id", "gtin", "mpn", "link", "mobile_link", "sale_price")
        return super().used(layout) | _present(*(layout.col(n) for n in per_item))


# column_map entries that name a product field; any other entry is an option column.
_GENERIC_FIELDS = frozenset(
    {"key", "sku", "title", "body_html", "description", "vendor"}
    | {"product_type", "tags", "image", "price", "variant_sku"}
)


@dataclass(frozen=True)
class GenericColumns(ItemColumns):
    """Any CSV, described by the brand's ``column_map`` (our field -> CSV column)."""

    @classmethod
    def from_layout(cls, layout: Layout, brand: BrandConfig) -> GenericColumns:
        h, cmap = layout.col, brand.column_map

        def mapped(name: str) -> int | None:
            return h(cmap[name]) if name in cmap else None

        def first(*names: str) -> int | None:  # the first non-empty entry of ``names``
            column = next((cmap[n] for n in names if cmap.get(n)), None)
            return h(column) if column else None

        return cls(
            title=mapped("title"),
            body=first("body_html", "description"),
            vendor=mapped("vendor"),
            ptype=mapped("product_type"),
            tags=mapped("tags"),
            sku=first("variant_sku", "sku"),
            price=mapped("price"),
            image=mapped("image"),
            options=tuple(
                (name, pos)
                for name, col in cmap.items()
                if name not in _GENERIC_FIELDS and (pos := h(col)) is not None
            ),
            more_images=None,
        )


WOO_KEY = "SKU (Parent for a variation)"
# Columns of a WooCommerce export that describe one row, not the product.
_WOO_PER_ROW = ("ID", "Type", "Parent", "Sale price", "Position", "Published")


@dataclass(frozen=True)
class WooColumns(ProductColumns):
    """A WooCommerce product export (``woocommerce`` has the row loop)."""

    kind: int | None
    parent: int | None
    ident: int | None
    attrs: tuple[tuple[int, int], ...]  # (Attribute N name, Attribute N value(s))

    @classmethod
    def from_layout(cls, layout: Layout, brand: BrandConfig) -> WooColumns:
        h = layout.col
        attrs = []
        for n in range(1, 1000):
            name, value = h(f"Attribute {n} name"), h(f"Attribute {n} value(s)")
            if name is None or value is None:
                break
            attrs.append((name, value))
        return cls(
            title=h("Name"),
            body=h("Description", "Short description"),
            vendor=h("Brands", "Brand"),
            ptype=h("Categories"),
            tags=h("Tags"),
            sku=h("SKU"),
            price=h("Regular price"),
            image=h("Images"),
            kind=h("Type"),
            parent=h("Parent"),
            ident=h("ID"),
            attrs=tuple(attrs),
        )

    def used(self, layout: Layout) -> frozenset[int]:
        per_row = (
            i for i, name in enumerate(layout.header) if _norm(name).startswith("attribute ")
        )
        named = (layout.col(n) for n in _WOO_PER_ROW)
        return super().used(layout) | _present(*named, *per_row)

    def keys(self, frame: pd.DataFrame) -> pd.Series:
        """The product of each row: a variation's ``Parent``; else its SKU, or ``id:<ID>``."""
        empty = pd.Series("", index=frame.index, dtype=object)

        def strip(c: int | None) -> pd.Series:
            return frame[c].str.strip() if c is not None else empty

        sku, ident = strip(self.sku), strip(self.ident)
        own = sku.where(sku != "", ("id:" + ident).where(ident != "", ""))
        variation = strip(self.kind).str.lower().str.contains("variation", regex=False)
        return strip(self.parent).where(variation, own)


FormatColumns = ShopifyColumns | MerchantColumns | GenericColumns | WooColumns
_COLUMNS: dict[
    str, type[ShopifyColumns] | type[MerchantColumns] | type[GenericColumns] | type[WooColumns]
] = {
    "shopify": ShopifyColumns,
    "gmc": MerchantColumns,
    "generic": GenericColumns,
    "woocommerce": WooColumns,
}


def format_columns(layout: Layout, brand: BrandConfig) -> FormatColumns:
    """The column map of ``layout``'s format (the brand's column_map for generic files)."""
    return _COLUMNS.get(layout.fmt, GenericColumns).from_layout(layout, brand)


class Normalizer:
    """Turns chunks of rows into products, carrying the open product across chunks."""

    def __init__(self, layout: Layout, brand: BrandConfig) -> None:
        self.layout = layout
        self.header = layout.header
        self.current: ProductAcc | None = None
        self.cols = cols = format_columns(layout, brand)
        self.bad_images = BadImageCells()
        self._product_cols = (cols.title, cols.body, cols.vendor, cols.ptype, cols.tags)
        used = cols.used(layout) | set(layout.key_cols)
        self.extra_cols = [
            (i, name)
            for i, name in enumerate(self.header)
            if i not in used and _norm(name) not in VOLATILE and name
        ]

    # -- keys ---------------------------------------------------------------------------

    def keys(self, frame: pd.DataFrame, lines: list[int]) -> tuple[pd.Series, list[RowError]]:
        """The product key of every row, and an error for each row without a usable one."""
        cols = self.layout.key_cols
        if isinstance(self.cols, WooColumns):
            key = self.cols.keys(frame)
        else:
            key = frame[cols[0]].str.strip()
            for c in cols[1:]:
                key = key.where(key != "", frame[c].str.strip())
        errors: list[RowError] = []
        bad_empty = key == ""
        bad_long = key.str.len() > MAX_KEY_CHARS
        if bad_empty.any() or bad_long.any():
            label = self.layout.key_label
            column = self.header[cols[-1]] if len(cols) > 1 else self.header[cols[0]]
            for pos in (bad_empty | bad_long).to_numpy().nonzero()[0]:
                row = frame.iloc[pos].tolist()
                raw = ",".join(row)[:2000]
                reason = (
                    f"missing {label}"
                    if bad_empty.iloc[pos]
                    else f"{label} is longer than {MAX_KEY_CHARS} characters"
                )
                errors.append(RowError(lines[pos], column, reason, raw))
        return key, errors

    # -- rows -> products ------------------------------------------------------------------

    def feed(
        self, frame: pd.DataFrame, lines: list[int]
    ) -> tuple[list[ProductAcc], list[RowError]]:
        """Products completed by this chunk (the last one stays open) and key errors.

        Works column by column: each used column becomes one list, and the row loop only
        zips them. A product's first row (with its extra columns) is read from the array.
        """
        if frame.empty:
            return [], []
        key, errors = self.keys(frame, lines)
        if errors:
            ok = (key != "") & (key.str.len() <= MAX_KEY_CHARS)
            lines = list(compress(lines, ok.tolist()))
            frame, key = frame[ok], key[ok]
        n = len(lines)
        arr = frame.to_numpy()
        blank = [""] * n

        def col(c: int | None) -> list[str]:
            return frame[c].tolist() if c is not None else blank

        keys = key.tolist()
        cols = self.cols
        if isinstance(cols, ShopifyColumns):
            done = self._shopify(cols, keys, lines, arr, col)
        elif isinstance(cols, WooColumns):
            done = self._woo(cols, keys, lines, arr, col)
        else:
            done = self._items(cols, keys, lines, arr, col)
        return done, errors

    def finish(self) -> list[ProductAcc]:
        last, self.current = self.current, None
        return [last] if last is not None else []

    def warnings(self) -> list[str]:
        """File-wide notes from reading the rows (one per image column with unreadable parts)."""
        return self.bad_images.warnings()

    def _image_list(self, column: int | None, cell: str, line: int) -> list[str]:
        images, unreadable = split_images(cell)
        if unreadable and column is not None:
            self.bad_images.note(self.header[column], line, unreadable)
        return images

    def _woo(
        self,
        c: WooColumns,
        keys: list[str],
        lines: list[int],
        arr: Any,
        col: Callable[[int | None], list[str]],
    ) -> list[ProductAcc]:
        chunk = woocommerce.WooChunk(
            keys=keys,
            lines=lines,
            types=col(c.kind),
            skus=col(c.sku),
            prices=col(c.price),
            images=col(c.image),
            attrs=[(col(name), col(value)) for name, value in c.attrs],
        )
        image_column = self.header[c.image] if c.image is not None else "Images"
        done, self.current = woocommerce.feed_rows(
            self.current,
            chunk,
            lambda acc, i: self._product_row(acc, arr[i]),
            self.bad_images,
            image_column,
        )
        return done

    def _product_row(self, acc: ProductAcc, row: Any) -> None:
        """Product-level fields from a row that has them; the first non-empty value wins."""

        def g(c: int | None) -> str:
            return str(row[c]).strip() if c is not None else ""

        title, body, vendor, ptype, tags = self._product_cols
        acc.fill(g(title), g(body), g(vendor), g(ptype), g(tags))
        if not acc.extra:
            acc.extra = {name: v for i, name in self.extra_cols if (v := str(row[i]).strip())}

    def _product_fields(self, row: Any) -> dict[str, str]:
        names = ("title", "body_html", "vendor", "product_type")
        cols = self._product_cols[:4]
        return {
            n: str(row[c]).strip() if c is not None else ""
            for n, c in zip(names, cols, strict=True)
        }

    def _shopify_product(
        self, acc: ProductAcc, row: Any, name_cols: tuple[int | None, ...]
    ) -> None:
        """A product's first row: its fields and, once, its option names by position."""
        self._product_row(acc, row)
        if not acc.slots:
            acc.slots = [str(row[c]).strip() if c is not None else "" for c in name_cols]
            for name in acc.slots:
                if name and name != "Title":  # "Title / Default Title": no options
                    acc.add_option(name)

    def _shopify(
        self,
        c: ShopifyColumns,
        keys: list[str],
        lines: list[int],
        arr: Any,
        col: Callable[[int | None], list[str]],
    ) -> list[ProductAcc]:
        done: list[ProductAcc] = []
        cur = self.current
        (n1, v1), (n2, v2), (n3, v3) = c.options
        columns = (
            col(c.title),
            col(c.sku),
            col(c.price),
            col(c.image),
            col(c.variant_image),
            col(c.image_position),
            col(v1),
            col(v2),
            col(v3),
        )
        # Option names and values repeat on every row: each distinct cell is decoded once
        # per chunk (the memo holds no more than the chunk's own cells).
        decoded: dict[str, str] = {}
        rows = zip(keys, lines, *columns, strict=True)
        for i, (k, line, title, sku, price, img, vimg, ipos, o1, o2, o3) in enumerate(rows):
            if cur is None or k != cur.key:
                if cur is not None:
                    done.append(cur)
                cur = ProductAcc(key=k, line=line)
            if title and not cur.title and title.strip():
                self._shopify_product(cur, arr[i], (n1, n2, n3))
                cur.fields_line = line
            elif title and title.strip():  # the handle's product fields again: must agree
                cur.check_fields(line, self._product_fields(arr[i]))
            if img:
                ipos = ipos.strip()
                cur.add_image(img.strip(), int(ipos) if ipos.isascii() and ipos.isdigit() else None)
            if sku or price or o1 or o2 or o3:
                options: dict[str, str] = {}
                slots = cur.slots or ["", "", ""]
                for j, value in enumerate((o1, o2, o3)):
                    value = value.strip()
                    if value:
                        name = slots[j]
                        if not name:
                            name = f"Option{j + 1}"
                            cur.placeholders = True
                        if not (name == "Title" and value == "Default Title"):
                            if (dname := decoded.get(name)) is None:
                                dname = decoded[name] = unescape(name)
                            if (dvalue := decoded.get(value)) is None:
                                dvalue = decoded[value] = unescape(value)
                            options[dname] = dvalue
                vimg = vimg.strip()
                cur.add_variant(
                    {
                        "sku": sku.strip() or None,
                        "options": options,
                        "price": price.strip() or None,
                        "image": vimg or None,
                        "line": line,
                    },
                    decoded=True,
                )
                if vimg:
                    cur.add_image(vimg)
        self.current = cur
        return done

    def _items(
        self,
        c: ItemColumns,
        keys: list[str],
        lines: list[int],
        arr: Any,
        col: Callable[[int | None], list[str]],
    ) -> list[ProductAcc]:
        """GMC and generic rows: each row is one variant of its product."""
        done: list[ProductAcc] = []
        cur = self.current
        opt_cols = [(name, col(pos)) for name, pos in c.options]
        columns = (col(c.sku), col(c.price), col(c.image), col(c.more_images))
        split_main = isinstance(c, GenericColumns)
        rows = zip(keys, lines, *columns, strict=True)
        for i, (k, line, sku, price, img, extra_imgs) in enumerate(rows):
            if cur is None or k != cur.key:
                if cur is not None:
                    done.append(cur)
                cur = ProductAcc(key=k, line=line)
            if not cur.title or not cur.extra:
                self._product_row(cur, arr[i])
            # A generic image column may hold a list; Merchant Center's image_link is one URL.
            images = self._image_list(c.image, img, line) if split_main else [img.strip()]
            img = images[0] if images else ""
            for url in images:
                cur.add_image(url)
            if extra_imgs:
                for url in self._image_list(c.more_images, extra_imgs, line):
                    cur.add_image(url)
            options: dict[str, str] = {}
            for name, values in opt_cols:
                value = values[i].strip()
                if value:
                    cur.add_option(name)
                    options[name] = value
            cur.add_variant(
                {
                    "sku": sku.strip() or None,
                    "options": options,
                    "price": price.strip() or None,
                    "image": img or None,
                    "line": line,
                }
            )
        self.current = cur
        return done
