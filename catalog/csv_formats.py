"""Catalog formats: which column is the product key, and how rows become products.

Three formats share one product shape (the ``product_revisions.data`` contract):

- **shopify**: a product export. The first row of a Handle carries the product; the
  following rows with the same Handle carry only variant columns and/or an image
  (continuation rows). They belong to the product and are not errors.
- **gmc**: a Google Merchant Center feed. Each row is an item (a variant); items share a
  product through ``item_group_id``, else the item ``id`` is the product.
- **generic**: any CSV, described by the brand's ``column_map`` (our field -> CSV column).

Catalog text is untrusted: values are copied as strings, never interpreted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

import pandas as pd

from catalog.csv_source import RowError
from catalog.product_content import ProductAcc
from pipeline.brand.config import BrandConfig

FORMATS = ("shopify", "gmc", "generic")
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
        order = ("shopify", "generic", "gmc")
    else:
        order = FORMATS
    for name in order:
        if name == "shopify":
            handle = _find(header, "Handle")
            if handle is not None and (fmt != "auto" or _find(header, "Title", "Variant SKU")):
                return Layout("shopify", header, [handle], "Handle")
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


class Normalizer:
    """Turns chunks of rows into products, carrying the open product across chunks."""

    def __init__(self, layout: Layout, brand: BrandConfig) -> None:
        self.layout = layout
        self.header = layout.header
        self.current: ProductAcc | None = None
        h = layout.col
        if layout.fmt == "shopify":
            self.c_title = h("Title")
            self.c_body = h("Body (HTML)", "Body HTML", "Body")
            self.c_vendor = h("Vendor")
            self.c_type = h("Type", "Product Type")
            self.c_tags = h("Tags")
            self.c_opt = [(h(f"Option{i} Name"), h(f"Option{i} Value")) for i in (1, 2, 3)]
            self.c_sku = h("Variant SKU")
            self.c_price = h("Variant Price")
            self.c_image = h("Image Src")
            self.c_vimage = h("Variant Image")
            variant_cols = [c for c in (self.c_sku, self.c_price) if c is not None]
            variant_cols += [v for _, v in self.c_opt if v is not None]
            self.c_variant_any = variant_cols
            used = {self.c_title, self.c_body, self.c_vendor, self.c_type, self.c_tags}
            used |= {self.c_sku, self.c_price, self.c_image, self.c_vimage}
            used |= {c for pair in self.c_opt for c in pair}
            # Variant and image columns describe one row, not the product.
            used |= {
                i
                for i, name in enumerate(self.header)
                if _norm(name).startswith(("variant ", "image ")) or _norm(name) == "cost per item"
            }
        elif layout.fmt == "gmc":
            self.c_title = h("title")
            self.c_body = h("description")
            self.c_vendor = h("brand")
            self.c_type = h("product_type")
            self.c_tags = None
            self.c_sku = h("id")
            self.c_price = h("price")
            self.c_image = h("image_link")
            self.c_more_images = h("additional_image_link")
            self.c_gmc_opts = [
                (label, c)
                for label, c in (
                    ("Color", h("color")),
                    ("Size", h("size")),
                    ("Material", h("material")),
                    ("Pattern", h("pattern")),
                )
                if c is not None
            ]
            used = {self.c_title, self.c_body, self.c_vendor, self.c_type, self.c_sku}
            used |= {self.c_price, self.c_image, self.c_more_images, h("item_group_id")}
            used |= {c for _, c in self.c_gmc_opts}
            # Item-level columns: a product's "extra" must not carry its first item's values.
            used |= {h(n) for n in ("gtin", "mpn", "link", "mobile_link", "sale_price")}
        else:
            cmap = brand.column_map
            known = {"key", "sku", "title", "body_html", "description", "vendor"}
            known |= {"product_type", "tags", "image", "price", "variant_sku"}
            self.c_title = h(cmap["title"]) if "title" in cmap else None
            body = cmap.get("body_html") or cmap.get("description")
            self.c_body = h(body) if body else None
            self.c_vendor = h(cmap["vendor"]) if "vendor" in cmap else None
            self.c_type = h(cmap["product_type"]) if "product_type" in cmap else None
            self.c_tags = h(cmap["tags"]) if "tags" in cmap else None
            sku = cmap.get("variant_sku") or cmap.get("sku")
            self.c_sku = h(sku) if sku else None
            self.c_price = h(cmap["price"]) if "price" in cmap else None
            self.c_image = h(cmap["image"]) if "image" in cmap else None
            self.c_gmc_opts = []
            for name, col in cmap.items():
                pos = h(col)
                if name not in known and pos is not None:
                    self.c_gmc_opts.append((name, pos))
            used = {self.c_title, self.c_body, self.c_vendor, self.c_type, self.c_tags}
            used |= {self.c_sku, self.c_price, self.c_image} | {c for _, c in self.c_gmc_opts}
        used |= set(layout.key_cols)
        self.extra_cols = [
            (i, name)
            for i, name in enumerate(self.header)
            if i not in used and _norm(name) not in VOLATILE and name
        ]

    # -- keys ---------------------------------------------------------------------------

    def keys(self, frame: pd.DataFrame, lines: list[int]) -> tuple[pd.Series, list[RowError]]:
        """The product key of every row, and an error for each row without a usable one."""
        cols = self.layout.key_cols
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
        if self.layout.fmt == "shopify":
            done = self._shopify(keys, lines, arr, col)
        else:
            done = self._items(keys, lines, arr, col)
        return done, errors

    def finish(self) -> list[ProductAcc]:
        last, self.current = self.current, None
        return [last] if last is not None else []

    def _product_row(self, acc: ProductAcc, row: Any) -> None:
        """Product-level fields from a row that has them; the first non-empty value wins."""

        def g(c: int | None) -> str:
            return str(row[c]).strip() if c is not None else ""

        acc.fill(g(self.c_title), g(self.c_body), g(self.c_vendor), g(self.c_type), g(self.c_tags))
        if not acc.extra:
            acc.extra = {name: v for i, name in self.extra_cols if (v := str(row[i]).strip())}

    def _shopify(
        self, keys: list[str], lines: list[int], arr: Any, col: Callable[[int | None], list[str]]
    ) -> list[ProductAcc]:
        done: list[ProductAcc] = []
        cur = self.current
        (n1, v1), (n2, v2), (n3, v3) = self.c_opt
        columns = (
            col(self.c_title),
            col(self.c_sku),
            col(self.c_price),
            col(self.c_image),
            col(self.c_vimage),
            col(v1),
            col(v2),
            col(v3),
        )
        rows = zip(keys, lines, *columns, strict=True)
        for i, (k, line, title, sku, price, img, vimg, o1, o2, o3) in enumerate(rows):
            if cur is None or k != cur.key:
                if cur is not None:
                    done.append(cur)
                cur = ProductAcc(key=k, line=line)
            if title and not cur.title and title.strip():
                row = arr[i]
                self._product_row(cur, row)
                if not cur.slots:
                    cur.slots = [str(row[c]).strip() if c is not None else "" for c in (n1, n2, n3)]
                    for name in cur.slots:
                        if name and name != "Title":  # "Title / Default Title": no options
                            cur.add_option(name)
            if img:
                cur.add_image(img.strip())
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
                            options[name] = value
                vimg = vimg.strip()
                cur.variants.append(
                    {
                        "sku": sku.strip() or None,
                        "options": options,
                        "price": price.strip() or None,
                        "image": vimg or None,
                        "line": line,
                    }
                )
                if vimg:
                    cur.add_image(vimg)
        self.current = cur
        return done

    def _items(
        self, keys: list[str], lines: list[int], arr: Any, col: Callable[[int | None], list[str]]
    ) -> list[ProductAcc]:
        """GMC and generic rows: each row is one variant of its product."""
        done: list[ProductAcc] = []
        cur = self.current
        gmc = self.layout.fmt == "gmc"
        more = col(self.c_more_images if gmc else None)
        opt_cols = [(name, col(c)) for name, c in self.c_gmc_opts]
        columns = (col(self.c_sku), col(self.c_price), col(self.c_image), more)
        rows = zip(keys, lines, *columns, strict=True)
        for i, (k, line, sku, price, img, extra_imgs) in enumerate(rows):
            if cur is None or k != cur.key:
                if cur is not None:
                    done.append(cur)
                cur = ProductAcc(key=k, line=line)
            if not cur.title or not cur.extra:
                self._product_row(cur, arr[i])
            img = img.strip()
            if img:
                cur.add_image(img)
            if extra_imgs:
                for url in extra_imgs.split(","):
                    cur.add_image(url.strip())
            options: dict[str, str] = {}
            for name, values in opt_cols:
                value = values[i].strip()
                if value:
                    cur.add_option(name)
                    options[name] = value
            cur.variants.append(
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
