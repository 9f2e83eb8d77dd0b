"""Catalog formats retailers have (issue 24, items 7-9), on SQLite and real Postgres.

7: Merchant Center RSS 2.0 and Atom feeds (streamed, entities refused), WooCommerce's export,
   image lists split (with a warning for what isn't one reference), a GMC-like feed without
   image_link warned, SKU-keyed rows that repeat exactly warned.
8: a SKU repeated by 2,048 variants is one warning, not one per pair of rows.
9: double-encoded entities are decoded until stable before they reach a prompt.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from catalog.importing.image_lists import split_images
from catalog.importing.importer import CatalogImportError, import_catalog
from pipeline.brand.config import BrandConfig
from pipeline.brand.templates import strip_html
from tests.catalog.test_import import HEADER, products, row_errors, write
from tests.conftest import ROOT

CATALOGS = ROOT / "samples" / "catalogs"


# --- 7: Merchant Center XML ------------------------------------------------------------


def test_rss_feed_with_the_g_namespace(factory: sessionmaker[Session], brand: BrandConfig) -> None:
    summary = import_catalog(factory, CATALOGS / "gmc_feed.xml", brand)
    assert (summary.status, summary.format) == ("succeeded", "gmc")
    assert (summary.rows_total, summary.imported, summary.errors) == (3, 2, 0)
    got = products(factory, brand)
    tee = got["ACME-TEE"]
    assert tee["title"] == "Organic Cotton Tee - Red / M" and tee["vendor"] == "ACME Outdoor"
    assert tee["options"] == ["Color", "Size"]
    # Repeated <g:additional_image_link> elements are a list, as in the text feed.
    assert tee["images"] == [
        "https://cdn.example.com/acme/tee-red.jpg",
        "https://cdn.example.com/acme/tee-red-back.jpg",
        "https://cdn.example.com/acme/tee-detail.jpg",
    ]
    # Each item is named by the line of its <item> tag.
    assert [(v["sku"], v["line"]) for v in tee["variants"]] == [
        ("ACME-TEE-RED-M", 7),
        ("ACME-TEE-RED-L", 27),
    ]
    assert tee["extra"] == {"shipping": "DE:4.95 EUR"}  # nested children, joined as in TSV


def test_atom_feed(factory: sessionmaker[Session], brand: BrandConfig) -> None:
    summary = import_catalog(factory, CATALOGS / "gmc_feed_atom.xml", brand)
    assert (summary.format, summary.imported, summary.errors) == ("gmc", 2, 0)
    got = products(factory, brand)
    # <g:id> is the item id, not Atom's own <id> URI; <summary> is the description.
    assert set(got) == {"ACME-BOTTLE-1", "ACME-MUG-1"}
    bottle = got["ACME-BOTTLE-1"]
    assert bottle["body_html"].startswith("Double-wall vacuum bottle")
    assert bottle["images"] == ["https://cdn.example.com/acme/bottle.jpg"]
    assert bottle["variants"][0]["options"] == {"Color": "Brushed Steel"}


BOMB = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<rss xmlns:g="http://base.google.com/ns/1.0"><channel>
<item><g:id>1</g:id><title>&b;</title></item></channel></rss>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY x SYSTEM "http://127.0.0.1:9/secret">]>
<rss xmlns:g="http://base.google.com/ns/1.0"><channel>
<item><g:id>1</g:id><title>&x;</title></item></channel></rss>
"""
BROKEN = """<?xml version="1.0"?>
<rss xmlns:g="http://base.google.com/ns/1.0"><channel>
<item><g:id>1</g:id><title>Tee</title></item>
<item><g:id>2</g:id><title>Mug</titel></item></channel></rss>
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BOMB, "declares entities or external references, which are refused"),
        (EXTERNAL, "declares entities or external references, which are refused"),
        (BROKEN, "feed.xml:4:32: not well-formed XML (mismatched tag)"),
    ],
)
def test_hostile_or_broken_xml_fails_in_one_line(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text, "feed.xml")
    with pytest.raises(CatalogImportError) as info:
        import_catalog(factory, path, brand)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert products(factory, brand) == {}


# --- 7: WooCommerce ------------------------------------------------------------------


def test_woocommerce_export_is_detected_and_keyed_on_parent(
    factory: sessionmaker[Session], brand: BrandConfig
) -> None:
    summary = import_catalog(factory, CATALOGS / "woocommerce_export.csv", brand)
    assert (summary.status, summary.format) == ("succeeded", "woocommerce")
    assert (summary.rows_total, summary.imported, summary.errors) == (7, 3, 0)
    got = products(factory, brand)
    hoodie = got["woo-hoodie"]
    assert hoodie["title"] == "Hoodie" and hoodie["product_type"] == "Clothing > Hoodies"
    assert hoodie["tags"] == ["fleece", "winter"] and hoodie["options"] == ["Color", "Size"]
    assert [(v["sku"], v["options"], v["price"], v["line"]) for v in hoodie["variants"]] == [
        ("woo-hoodie-blue-s", {"Color": "Blue", "Size": "S"}, "45", 3),
        ("woo-hoodie-green-m", {"Color": "Green", "Size": "M"}, "45", 4),
    ]
    # "Images" is a comma list: both product images, then each variation's own.
    assert hoodie["images"] == [
        "https://woo.example.com/img/hoodie-1.jpg",
        "https://woo.example.com/img/hoodie-2.jpg",
        "https://woo.example.com/img/hoodie-blue.jpg",
        "https://woo.example.com/img/hoodie-green.jpg",
    ]
    assert hoodie["variants"][0]["image"] == "https://woo.example.com/img/hoodie-blue.jpg"
    assert [v["sku"] for v in got["woo-beanie"]["variants"]] == ["woo-beanie"]
    # A parent without a SKU is named "id:<ID>" by its variations.
    cap = got["id:30"]
    assert cap["title"] == "Cap"
    assert [v["options"] for v in cap["variants"]] == [{"Color": "Black"}, {"Color": "White"}]


def test_woocommerce_variation_without_parent_is_a_row_error(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    text = (
        "ID,Type,SKU,Name,Regular price,Images,Parent,Attribute 1 name,Attribute 1 value(s)\n"
        '1,variable,tee,Tee,,,,Color,"Red, Blue"\n'
        "2,variation,tee-red,Tee - Red,10,,tee,Color,Red\n"
        "3,variation,tee-blue,Tee - Blue,10,,,Color,Blue\n"
    )
    summary = import_catalog(factory, write(tmp_path, text), brand, fmt="woocommerce")
    assert summary.imported == 1
    assert row_errors(factory, summary.run_id) == [
        (4, "Parent", "missing SKU (Parent for a variation)")
    ]


# --- 7: image lists, missing image_link, SKU-keyed repeats ---------------------------


def test_split_images_keeps_commas_inside_urls() -> None:
    cdn = "https://res.example.com/image/upload/w_100,h_100/a.jpg"
    assert split_images(f"{cdn}, https://x.example/b.jpg") == ([cdn, "https://x.example/b.jpg"], [])
    assert split_images("a.jpg,b.jpg , ,c.jpg") == (["a.jpg", "b.jpg", "c.jpg"], [])
    glued = "https://x.example/a.jpg https://x.example/b.jpg"
    assert split_images(f"{glued},https://x.example/c.jpg") == (
        ["https://x.example/c.jpg"],
        [glued],
    )


def test_generic_image_column_holding_a_list(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    cfg = brand.model_copy(update={"column_map": {"sku": "sku", "title": "name", "image": "pics"}})
    text = (
        "sku,name,pics\n"
        'S1,Tee,"https://x.example/1.jpg,https://x.example/2.jpg"\n'
        'S2,Mug,"https://x.example/3.jpg;https://x.example/4.jpg,https://x.example/5.jpg"\n'
    )
    summary = import_catalog(factory, write(tmp_path, text), cfg)
    got = products(factory, cfg)
    assert got["S1"]["images"] == ["https://x.example/1.jpg", "https://x.example/2.jpg"]
    assert got["S1"]["variants"][0]["image"] == "https://x.example/1.jpg"
    assert got["S2"]["images"] == ["https://x.example/5.jpg"]
    notes = [w for w in summary.warnings if "column 'pics'" in w]
    assert len(notes) == 1 and "line(s) 3;" in notes[0] and "skipped" in notes[0]


def test_gmc_like_file_without_image_link_warns(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    text = "id\ttitle\timage_url\tprice\nA1\tTee\thttps://x.example/1.jpg\t10 EUR\n"
    summary = import_catalog(factory, write(tmp_path, text, "feed.tsv"), brand)
    assert summary.format == "gmc"
    assert any("no 'image_link' column" in w and "image_url" in w for w in summary.warnings)


def test_sku_keyed_rows_that_repeat_exactly_are_warned(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    cfg = brand.model_copy(update={"column_map": {"sku": "sku", "title": "title", "size": "size"}})
    text = "sku,title,size\nS1,Tee,M\nS1,Tee,L\nS1,Tee,M\nS1,Tee,M\n"
    summary = import_catalog(factory, write(tmp_path, text), cfg)
    assert summary.imported == 1
    assert "'S1': line(s) 4, 5 repeat line 2 exactly" in "\n".join(summary.warnings)


# --- 8: one warning per repeated value --------------------------------------------------


def test_a_sku_shared_by_2048_variants_is_one_warning(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    rows = [f"p1,{'Tee' if i == 0 else ''},,Size,S{i},N/A,10," for i in range(2048)]
    path = write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n")
    t0 = time.perf_counter()
    summary = import_catalog(factory, path, brand)
    elapsed = time.perf_counter() - t0
    assert summary.imported == 1 and summary.row_warnings == 1
    (note,) = [w for w in summary.warnings if "'N/A'" in w]
    assert note.startswith("SKU 'N/A' is shared by 2048 variants of 'p1' with different options")
    assert "(lines 2, 3, 4," in note and "21 and 2028 more); all were kept" in note
    assert len(products(factory, brand)["p1"]["variants"]) == 2048
    assert elapsed < 10  # the per-pair version made 2,096,128 warnings


# --- 9: double-encoded entities ----------------------------------------------------------


def test_double_encoded_entities_are_decoded_until_stable(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    text = (
        f"{HEADER},Vendor\n"
        "p1,Frame 5&quot; x 7.2&quot;,<p>Oak&amp;nbsp;frame &amp;amp; glass</p>,"
        "Size,5&amp;quot;,S1,10,,ACME &amp;amp; Co\n"
    )
    import_catalog(factory, write(tmp_path, text), brand)
    got = products(factory, brand)["p1"]
    assert got["title"] == 'Frame 5" x 7.2"' and got["vendor"] == "ACME & Co"
    assert got["variants"][0]["options"] == {"Size": '5"'}
    assert strip_html(got["body_html"]) == "Oak frame & glass"  # what a prompt gets


def test_double_encoded_entities_in_an_xml_feed(
    factory: sessionmaker[Session], brand: BrandConfig
) -> None:
    import_catalog(factory, CATALOGS / "gmc_feed.xml", brand)
    frame = products(factory, brand)["ACME-FRAME-57"]
    assert frame["title"] == 'Photo Frame 5" x 7.2"'
    assert strip_html(frame["body_html"]) == "Oak frame with glass."
    assert products(factory, brand)["ACME-TEE"]["body_html"].endswith("tee & relaxed fit.")
