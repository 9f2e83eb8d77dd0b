"""The export writers' bytes, pinned: a Shopify CSV, a Merchant Center TSV and XML, and an
``offer_id`` feed over rows with the awkward cases (quotes, commas, ``&<>``, a control
character, non-ASCII and spaces in keys, a template in no slot, more than 10 additional
images, the catalog's own images first) must equal the reference files in
``data/feeds/``, written by the writers before their speed-up (issue 25). A change to
these files is a change to what stores import: make it on purpose."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.brand.loader import find_brand
from pipeline.delivery.feeds import Exporter
from tests.conftest import ROOT

ACME = find_brand(ROOT / "samples" / "brands", "acme")
GOLDEN = Path(__file__).parent / "data" / "feeds"
BASE = "https://cdn.example.com/a%20b/"
OFFER_ID = "{{ product.key }}{% for v in variant.values() %}-{{ v }}{% endfor %}"


@dataclass
class Row:
    product_id: int
    handle: str
    template: str
    key: str
    variant: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def _rows() -> list[Row]:
    mug = {
        "title": 'Mug "Big", glazed & <fired>',
        "options": ["Color", "Size"],
        "images": ["a.jpg", "b.jpg"],
        "variants": [
            {"sku": "M-R", "options": {"Color": "Red", "Size": "L"}},
            {"sku": "M-B", "options": {"Color": "Blue", "Size": "S"}},
        ],
    }
    red = {"options": {"Color": "Red", "Size": "L"}, "skus": ["M-R"]}
    blue = {"options": {"Color": "Blue", "Size": "S"}, "skus": ["M-B"]}
    red_templates = [
        "flat_lay",
        "hero_white",
        "lifestyle_kitchen",
        "packshot_scene",
        "packshot_white",
        "not_slotted",
    ]
    rows = [
        Row(1, "mug", t, f"acme/M-R/{t}/{i} a,b.jpg", red, mug) for i, t in enumerate(red_templates)
    ]
    rows += [
        Row(1, "mug", t, f"acme/M-B/{t}/ü{i}.jpg", blue, mug)
        for i, t in enumerate(["hero_white", "packshot_white"])
    ]
    bowl = {"title": "Bowl\ttab", "images": []}
    handle = "bowl&<x>\x01"
    rows += [Row(2, handle, "hero_white", f"acme/bowl/k{i}.jpg", {}, bowl) for i in range(12)]
    rows += [
        Row(2, handle, "lifestyle_kitchen", "acme/bowl/l1.jpg", {}, bowl),
        Row(2, handle, "packshot_scene", "acme/bowl/l2.jpg", {}, bowl),
    ]
    return rows


def _written(name: str) -> str:
    assert ACME.channels is not None
    channel, method = {
        "shopify.csv": ("shopify", "shopify"),
        "gmc.tsv": ("gmc", "gmc_tsv"),
        "gmc.xml": ("gmc", "gmc_xml"),
        "offer.tsv": ("gmc", "gmc_tsv"),
    }[name]
    spec = ACME.channels[channel]
    if name == "offer.tsv":
        spec = spec.model_copy(update={"offer_id": OFFER_ID})
    out = io.StringIO()
    getattr(Exporter(ACME, channel, spec, BASE), method)(_rows(), out)
    return out.getvalue()


@pytest.mark.parametrize("name", ["shopify.csv", "gmc.tsv", "gmc.xml", "offer.tsv"])
def test_feed_bytes_match_the_reference(name: str) -> None:
    expected = (GOLDEN / name).read_bytes().decode("utf-8")
    assert _written(name) == expected
