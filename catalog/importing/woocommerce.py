"""WooCommerce's native product export -> products.

A ``variable`` product's row carries the product (Name, Description, Categories, Tags,
Images); each of its ``variation`` rows names it in ``Parent`` (the parent's SKU, or
``id:<ID>`` when the parent has none) and carries one variant: its SKU, price, image and
its option values, with the option names beside them in ``Attribute N name`` /
``Attribute N value(s)``. A ``simple`` (or ``external``) product is one row and one variant.
``Images`` is a comma-separated list; the first is a variation's own image.

The product key is therefore the SKU (or ``id:<ID>``) of a product row and the ``Parent``
of a variation row; ``csv_formats.WooColumns`` computes it for a whole chunk at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from catalog.importing.image_lists import BadImageCells, split_images
from catalog.importing.product_content import ProductAcc


@dataclass
class WooChunk:
    """The columns of one chunk that the row loop reads, as lists (one entry per row)."""

    keys: list[str]
    lines: list[int]
    types: list[str]
    skus: list[str]
    prices: list[str]
    images: list[str]
    attrs: Sequence[tuple[list[str], list[str]]]  # (Attribute N name, Attribute N value(s))


def is_variation(kind: str) -> bool:
    return "variation" in kind.lower()


def _has_own_variant(kind: str) -> bool:
    """A product row that is sold as itself (simple, external), not through variations."""
    kind = kind.lower()
    return "variable" not in kind and "grouped" not in kind


def feed_rows(
    cur: ProductAcc | None,
    chunk: WooChunk,
    product_row: Callable[[ProductAcc, int], None],
    bad: BadImageCells,
    image_column: str,
) -> tuple[list[ProductAcc], ProductAcc | None]:
    """Products completed by this chunk and the one still open (it may go on)."""
    done: list[ProductAcc] = []
    columns = (chunk.keys, chunk.lines, chunk.types, chunk.skus, chunk.prices, chunk.images)
    for i, (key, line, kind, sku, price, cell) in enumerate(zip(*columns, strict=True)):
        if cur is None or key != cur.key:
            if cur is not None:
                done.append(cur)
            cur = ProductAcc(key=key, line=line)
        images, unreadable = split_images(cell)
        if unreadable:
            bad.note(image_column, line, unreadable)
        for url in images:
            cur.add_image(url)
        variant = {
            "sku": sku.strip() or None,
            "options": {},
            "price": price.strip() or None,
            "image": images[0] if images else None,
            "line": line,
        }
        if not is_variation(kind):
            product_row(cur, i)  # product fields: the first row that has them wins
            if _has_own_variant(kind):
                cur.add_variant(variant)
            continue
        # A variation's options; an "Any ..." attribute (empty value) is no option.
        for names, values in chunk.attrs:
            name, value = names[i].strip(), values[i].strip()
            if name and value:
                cur.add_option(name)
                variant["options"][name] = value
        cur.add_variant(variant)
    return done, cur
