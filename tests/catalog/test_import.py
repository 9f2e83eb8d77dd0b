"""Catalog import on SQLite and real Postgres: formats, line numbers, bad rows, bad files,
idempotence. The importer commits, so each module run gets its own database and each test
its own brand."""

from __future__ import annotations

import codecs
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from catalog.importing.importer import CatalogImportError, ImportSummary, import_catalog
from catalog.models import (
    Brand,
    ImportRowError,
    ImportRun,
    Product,
    ProductRevision,
    SourceImage,
    SourceImageRef,
)
from pipeline.brand.config import BrandConfig
from pipeline.brand.loader import find_brand
from tests.conftest import ROOT

SAMPLES = ROOT / "samples"

HEADER = "Handle,Title,Body (HTML),Option1 Name,Option1 Value,Variant SKU,Variant Price,Image Src"


def write(tmp_path: Path, text: str, name: str = "catalog.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def products(f: sessionmaker[Session], brand: BrandConfig) -> dict[str, dict[str, Any]]:
    with f() as s:
        rows = s.execute(
            select(Product.sku, ProductRevision.data)
            .join(Brand, Brand.id == Product.brand_id)
            .join(ProductRevision, ProductRevision.id == Product.current_revision_id)
            .where(Brand.name == brand.name)
        ).all()
    return {sku: data for sku, data in rows}


def row_errors(f: sessionmaker[Session], run_id: int | None) -> list[tuple[int, str | None, str]]:
    with f() as s:
        rows = s.execute(
            select(ImportRowError.line_number, ImportRowError.column, ImportRowError.reason)
            .where(ImportRowError.import_run_id == run_id)
            .order_by(ImportRowError.line_number)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def count(f: sessionmaker[Session], model: Any, brand: BrandConfig) -> int:
    with f() as s:
        q = select(func.count()).select_from(model)
        if model is Product:
            q = q.join(Brand, Brand.id == Product.brand_id).where(Brand.name == brand.name)
        elif model is ProductRevision:
            q = (
                q.join(Product, Product.id == ProductRevision.product_id)
                .join(Brand, Brand.id == Product.brand_id)
                .where(Brand.name == brand.name)
            )
        return int(s.scalar(q) or 0)


# --- the samples -----------------------------------------------------------------------


def test_shopify_sample(factory: sessionmaker[Session], brand: BrandConfig) -> None:
    summary = import_catalog(factory, SAMPLES / "catalog.csv", brand)
    assert (summary.status, summary.format, summary.encoding) == ("succeeded", "shopify", "utf-8")
    assert (summary.rows_total, summary.imported, summary.revisions_new) == (11, 5, 5)
    assert summary.errors == 0 and row_errors(factory, summary.run_id) == []

    got = products(factory, brand)
    assert set(got) == {
        "linen-throw-pillow",
        "stoneware-mug",
        "merino-beanie",
        "oak-serving-board",
        "template-test-candle",
    }
    pillow = got["linen-throw-pillow"]
    assert pillow["title"] == "Linen Throw Pillow"
    assert "<strong>European linen</strong>" in pillow["body_html"]
    assert pillow["options"] == ["Color", "Size"]
    assert pillow["tags"] == ["bedroom", "linen", "living room"]
    # The Body cell spans lines 2-3, so the continuation rows start at line 4.
    assert [(v["sku"], v["options"], v["line"]) for v in pillow["variants"]] == [
        ("ACME-PIL-SAGE-45", {"Color": "Sage", "Size": "45 x 45 cm"}, 2),
        ("ACME-PIL-SAGE-60", {"Color": "Sage", "Size": "60 x 60 cm"}, 4),
        ("ACME-PIL-TERRA-45", {"Color": "Terracotta", "Size": "45 x 45 cm"}, 5),
        ("ACME-PIL-TERRA-60", {"Color": "Terracotta", "Size": "60 x 60 cm"}, 6),
    ]
    # The image-only continuation row (line 7) attaches to its product; it is not a variant.
    assert pillow["images"][-1] == "https://cdn.example.com/acme/pillow-detail.jpg"
    # Both colours name the one sample packshot drawing (samples/packshots/pillow.png).
    assert pillow["images"] == ["packshots/pillow.png", pillow["images"][-1]]
    assert pillow["variants"][0]["price"] == "39.00"
    # Stock columns are not content; variant/image columns are not product extras.
    assert "Variant Inventory Qty" not in pillow["extra"]
    assert "Variant Barcode" not in pillow["extra"]
    assert pillow["extra"]["Status"] == "active"

    board = got["oak-serving-board"]
    assert board["options"] == [] and board["variants"][0]["options"] == {}
    # Untrusted text is stored literally, never evaluated.
    candle = got["template-test-candle"]
    assert candle["title"] == "Soy Candle {{ 7*7 }} <script>alert(1)</script>"
    assert "{% for x in range(9) %}" in candle["body_html"]

    with factory() as s:
        run = s.get(ImportRun, summary.run_id)
        assert run is not None and run.status == "succeeded" and run.finished_at is not None
        assert (run.rows_total, run.products_seen, run.revisions_new) == (11, 5, 5)
        assert run.file_sha256 and len(run.file_sha256) == 64
        lines = dict(
            s.execute(
                select(Product.sku, ProductRevision.source_line)
                .join(ProductRevision, ProductRevision.id == Product.current_revision_id)
                .join(Brand, Brand.id == Product.brand_id)
                .where(Brand.name == brand.name)
            ).all()
        )
        assert lines["linen-throw-pillow"] == 2 and lines["stoneware-mug"] == 8
        revs = s.scalars(
            select(ProductRevision.import_run_id)
            .join(Product, Product.id == ProductRevision.product_id)
            .join(Brand, Brand.id == Product.brand_id)
            .where(Brand.name == brand.name)
        ).all()
        assert set(revs) == {summary.run_id}


def test_gmc_sample_tab_delimited(factory: sessionmaker[Session], brand: BrandConfig) -> None:
    summary = import_catalog(factory, SAMPLES / "catalog_gmc.tsv", brand)
    assert (summary.format, summary.rows_total, summary.imported) == ("gmc", 4, 2)
    got = products(factory, brand)
    tee = got["ACME-TEE"]  # keyed by item_group_id
    assert [v["sku"] for v in tee["variants"]] == [
        "ACME-TEE-RED-M",
        "ACME-TEE-RED-L",
        "ACME-TEE-NAV-M",
    ]
    assert tee["variants"][2]["options"] == {"Color": "Navy", "Size": "M", "Material": "cotton"}
    assert tee["options"] == ["Color", "Size", "Material"]
    assert "https://cdn.example.com/acme/tee-detail.jpg" in tee["images"]
    assert tee["vendor"] == "ACME Outdoor" and tee["variants"][0]["line"] == 2
    assert "availability" not in tee["extra"] and "gtin" not in tee["extra"]
    bottle = got["ACME-BOTTLE-1"]  # no item_group_id: keyed by id
    assert bottle["variants"][0]["options"] == {
        "Color": "Brushed Steel",
        "Material": "stainless steel",
    }


def test_generic_semicolon_with_column_map(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    cfg = brand.model_copy(
        update={
            "column_map": {"sku": "Artikel", "title": "Name", "Farbe": "Farbe", "image": "Bild"}
        }
    )
    path = write(
        tmp_path,
        "Artikel;Name;Farbe;Bild;Lager\n"
        "A-1;Tasse;Rot;https://x/1.jpg;3\n"
        "A-1;Tasse;Blau;https://x/2.jpg;4\n"
        'B-2;"Teller; flach";Weiß;;1\n',
    )
    summary = import_catalog(factory, path, cfg, fmt="generic")
    assert (summary.format, summary.imported, summary.errors) == ("generic", 2, 0)
    got = products(factory, cfg)
    assert [v["options"] for v in got["A-1"]["variants"]] == [{"Farbe": "Rot"}, {"Farbe": "Blau"}]
    assert got["A-1"]["images"] == ["https://x/1.jpg", "https://x/2.jpg"]
    assert got["B-2"]["title"] == "Teller; flach"
    assert got["B-2"]["extra"] == {"Lager": "1"}


# --- idempotence -------------------------------------------------------------------------


def test_reimport_is_idempotent_and_changes_make_one_revision(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    original = (SAMPLES / "catalog.csv").read_text(encoding="utf-8")
    first = import_catalog(factory, SAMPLES / "catalog.csv", brand)
    assert first.revisions_new == 5

    again = import_catalog(factory, SAMPLES / "catalog.csv", brand)
    assert (again.revisions_new, again.unchanged, again.imported) == (0, 5, 5)
    assert count(factory, ProductRevision, brand) == 5

    # Stock moves every day: it must not create revisions.
    stock = write(tmp_path, original.replace(",shopify,24,deny", ",shopify,3,deny"))
    assert import_catalog(factory, stock, brand).revisions_new == 0

    changed = write(tmp_path, original.replace("Stoneware Mug,", "Stoneware Mug XL,"))
    result = import_catalog(factory, changed, brand)
    assert (result.revisions_new, result.unchanged) == (1, 4)
    with factory() as s:
        mug = s.execute(
            select(Product, ProductRevision)
            .join(ProductRevision, ProductRevision.id == Product.current_revision_id)
            .join(Brand, Brand.id == Product.brand_id)
            .where(Brand.name == brand.name, Product.sku == "stoneware-mug")
        ).one()
        assert mug[1].revision == 2 and mug[1].data["title"] == "Stoneware Mug XL"
        assert mug[1].import_run_id == result.run_id

    # Going back to the old content points at the old revision instead of copying it.
    back = import_catalog(factory, SAMPLES / "catalog.csv", brand)
    assert (back.revisions_new, back.reverted, back.unchanged) == (0, 1, 4)
    assert products(factory, brand)["stoneware-mug"]["title"] == "Stoneware Mug"
    assert count(factory, ProductRevision, brand) == 6


def test_moving_rows_creates_no_revision(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    rows = [
        "p1,Tee,,Color,Red,S1,10,",
        "p1,,,,Blue,S2,10,",
        "p2,Mug,,Color,White,M1,5,",
    ]
    a = write(tmp_path, "\n".join([HEADER, *rows]) + "\n", "a.csv")
    assert import_catalog(factory, a, brand).revisions_new == 2
    # Products swapped, and p1's continuation row before its product row.
    b = write(tmp_path, "\n".join([HEADER, rows[2], rows[1], rows[0]]) + "\n", "b.csv")
    moved = import_catalog(factory, b, brand)
    assert (moved.revisions_new, moved.unchanged, moved.imported) == (0, 2, 2)
    # p1's rows are not adjacent at all: they are merged into one product.
    c = write(tmp_path, "\n".join([HEADER, rows[1], rows[2], rows[0]]) + "\n", "c.csv")
    split = import_catalog(factory, c, brand)
    assert (split.revisions_new, split.unchanged, split.imported) == (0, 2, 2)
    assert any("non-adjacent" in w for w in split.warnings)
    p1 = products(factory, brand)["p1"]
    assert [(v["sku"], v["options"]) for v in p1["variants"]] == [
        ("S1", {"Color": "Red"}),
        ("S2", {"Color": "Blue"}),
    ]


def test_products_spanning_chunks_match_one_chunk(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    base = find_brand(SAMPLES / "brands", "acme")
    small = base.model_copy(update={"name": f"c-{uuid.uuid4().hex[:8]}"})
    big = base.model_copy(update={"name": f"c-{uuid.uuid4().hex[:8]}"})
    a = import_catalog(factory, SAMPLES / "catalog.csv", small, chunk_rows=2)
    b = import_catalog(factory, SAMPLES / "catalog.csv", big, chunk_rows=10_000)
    assert (a.imported, a.revisions_new) == (b.imported, b.revisions_new) == (5, 5)
    assert a.warnings == [] and products(factory, small) == products(factory, big)


def test_a_product_split_across_chunks_gets_one_revision_and_its_merged_references(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    """Each chunk is applied as it is read: p1's first rows make a revision with their
    chunk, and its later rows (two chunks on) replace it with the merged product's, and its
    image references with the merged images'."""
    rows = [
        "p1,Tee,,Color,Red,S1,10,https://x.test/a.jpg",
        "p2,Mug,,Color,White,M1,5,https://x.test/c.jpg",
        "p3,Cap,,Color,Black,C1,7,",
        "p1,,,,Blue,S2,10,https://x.test/b.jpg",
    ]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")
    split = import_catalog(factory, path, brand, chunk_rows=1)
    assert (split.imported, split.revisions_new) == (3, 3)
    assert any("non-adjacent" in w for w in split.warnings)
    assert count(factory, ProductRevision, brand) == 3
    with factory() as s:
        refs = s.execute(
            select(Product.sku, ProductRevision.revision, SourceImageRef.position, SourceImage.url)
            .join(ProductRevision, ProductRevision.id == SourceImageRef.product_revision_id)
            .join(Product, Product.id == ProductRevision.product_id)
            .join(Brand, Brand.id == Product.brand_id)
            .join(SourceImage, SourceImage.id == SourceImageRef.source_image_id)
            .where(Brand.name == brand.name)
            .order_by(Product.sku, SourceImageRef.position)
        ).all()
    assert [tuple(r) for r in refs] == [
        ("p1", 1, 1, "https://x.test/a.jpg"),
        ("p1", 1, 2, "https://x.test/b.jpg"),
        ("p2", 1, 1, "https://x.test/c.jpg"),
    ]
    assert products(factory, brand)["p1"]["images"] == [
        "https://x.test/a.jpg",
        "https://x.test/b.jpg",
    ]
    # The same file in one chunk: nothing new.
    again = import_catalog(factory, path, brand)
    assert (again.revisions_new, again.unchanged) == (0, 3)


# --- encodings and dialects --------------------------------------------------------------


def test_utf8_bom_and_crlf_and_blank_lines(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    text = (
        "\r\n".join(
            [
                HEADER,
                'p1,Caf\u00e9 Tee,"<p>a\r\nb</p>",Color,Red,S1,10,',
                "",
                "p1,,,,Blue,S2,10,",
                ",,,,,,,",
                "p2,Mug,,Color,White,M1,5,",
            ]
        )
        + "\r\n"
    )
    path = tmp_path / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    summary = import_catalog(factory, path, brand)
    assert summary.encoding == "utf-8-sig" and summary.errors == 0
    assert summary.rows_total == 3  # blank lines and empty rows are not rows
    got = products(factory, brand)
    assert got["p1"]["title"] == "Caf\u00e9 Tee"
    assert [v["line"] for v in got["p1"]["variants"]] == [2, 5]
    assert got["p2"]["variants"][0]["line"] == 7


def test_cp1252_is_decoded_with_a_recorded_warning(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    text = f"{HEADER}\np1,Caf\u00e9 \u20ac Tee,,Color,Red,S1,10,\n"
    path = write(tmp_path, text, encoding="cp1252")
    summary = import_catalog(factory, path, brand)
    assert summary.encoding == "cp1252" and summary.status == "succeeded"
    assert len(summary.warnings) == 1
    assert "not valid UTF-8" in summary.warnings[0] and ":2:" in summary.warnings[0]
    assert products(factory, brand)["p1"]["title"] == "Caf\u00e9 \u20ac Tee"
    with factory() as s:
        run = s.get(ImportRun, summary.run_id)
        assert run is not None and run.encoding == "cp1252"
        assert run.error is None and any("decoded as cp1252" in w for w in run.warnings)

    with pytest.raises(CatalogImportError, match=r":2: not valid UTF-8"):
        import_catalog(factory, path, brand, encoding="utf-8")


# --- bad rows ----------------------------------------------------------------------------


def test_bad_rows_are_recorded_and_the_rest_imports(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    lines = [
        HEADER,  # 1
        'good-1,Tee,"<p>two',  # 2
        'lines</p>",Color,Red,S1,10,',  # 3
        "good-1,,,,Blue,S2,10,",  # 4
        "ragged-short,Mug,,Color,Red",  # 5
        "ragged-long,Mug,,Color,Red,M1,5,,extra,cells",  # 6
        ",Orphan,,Color,Red,O1,5,",  # 7: no Handle
        "   ,Orphan,,Color,Red,O2,5,",  # 8: blank Handle
        "long-1,Lamp,<p>" + "x" * 300 + "</p>,Color,Red,L1,5,",  # 9: over-long Body
        "good-2,Vase,,Color,Blue,V1,7,,",  # 10: a trailing empty cell is tolerated
        "k" * 260 + ",Key too long,,,,,,",  # 11
        'bad-end,Cup,"never closed,Color,Red,C1,1,',  # 12-13: EOF inside quotes
        "",
    ]
    path = write(tmp_path, "\n".join(lines))
    summary = import_catalog(factory, path, brand, max_field_chars=280)
    assert summary.status == "succeeded"
    assert sorted(products(factory, brand)) == ["good-1", "good-2"]
    assert [v["line"] for v in products(factory, brand)["good-1"]["variants"]] == [2, 4]
    errors = row_errors(factory, summary.run_id)
    assert errors == [
        (5, None, "expected 8 fields, found 5"),
        (6, None, "expected 8 fields, found 10"),
        (7, "Handle", "missing Handle"),
        (8, "Handle", "missing Handle"),
        (9, "Body (HTML)", "field is 307 characters; the limit is 280"),
        (11, "Handle", "Handle is longer than 255 characters"),
        (12, None, "quoted field is never closed; expected 8 fields, found 3"),
    ]
    assert summary.errors == 7 and summary.rows_total == 10
    with factory() as s:
        raw = s.scalar(
            select(ImportRowError.raw_row).where(
                ImportRowError.import_run_id == summary.run_id, ImportRowError.line_number == 5
            )
        )
        assert raw == "ragged-short,Mug,,Color,Red"
        run = s.get(ImportRun, summary.run_id)
        assert run is not None and (run.rows_error, run.rows_total) == (7, 10)


def test_gmc_row_without_id_is_a_row_error(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "id\ttitle\titem_group_id\tcolor\nA1\tTee\tG1\tRed\n\tNo id\t\tBlue\nA3\tTee\tG1\tNavy\n",
        "feed.tsv",
    )
    summary = import_catalog(factory, path, brand)
    assert summary.format == "gmc" and summary.imported == 1
    assert row_errors(factory, summary.run_id) == [(3, "id", "missing item_group_id/id")]


def test_nul_byte_in_a_late_row_is_a_row_error(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    filler = "".join(f"p{i},Tee {i},{'y' * 100},Color,Red,S{i},1,\n" for i in range(100))
    path = write(tmp_path, f"{HEADER}\n{filler}bad,T\x00ee,,Color,Red,B1,1,\n")
    summary = import_catalog(factory, path, brand)
    assert summary.imported == 100
    assert row_errors(factory, summary.run_id) == [(102, "Title", "contains a NUL byte")]


# --- bad files ---------------------------------------------------------------------------


def _assert_failed_cleanly(
    factory: sessionmaker[Session], brand: BrandConfig, exc: CatalogImportError, match: str
) -> None:
    assert match in str(exc) and "\n" not in str(exc)
    summary: ImportSummary = exc.summary
    assert summary.status == "failed" and summary.run_id is not None
    with factory() as s:
        run = s.get(ImportRun, summary.run_id)
        assert run is not None and run.status == "failed" and match in (run.error or "")
        assert run.finished_at is not None
    assert count(factory, Product, brand) == 0
    assert count(factory, ProductRevision, brand) == 0
    assert row_errors(factory, summary.run_id) == []


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.csv", b"", "empty file"),
        ("blank.csv", b"\xef\xbb\xbf \r\n\n", "empty file"),
        ("header-only.csv", HEADER.encode() + b"\n", "no data rows"),
        ("image.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "binary file, looks like a PNG"),
        ("book.xlsx", b"PK\x03\x04" + b"\x00" * 64, "ZIP archive"),
        ("nul.csv", b"Handle,Title\nab\x00\x01\x02,x\n", "binary file (NUL or control bytes)"),
        ("nokey.csv", b"sku,name\n1,Tee\n", "no key column"),
        ("latin.csv", b"Handle,Title\np1,\x81\x8d\x8f\n", "neither UTF-8 nor cp1252"),
    ],
)
def test_bad_files_fail_with_one_line_and_write_only_the_run(
    factory: sessionmaker[Session],
    brand: BrandConfig,
    tmp_path: Path,
    name: str,
    content: bytes,
    match: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CatalogImportError) as info:
        import_catalog(factory, path, brand)
    _assert_failed_cleanly(factory, brand, info.value, match)
    assert str(path) in str(info.value)


def test_missing_file_and_wrong_explicit_format(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    with pytest.raises(CatalogImportError) as info:
        import_catalog(factory, tmp_path / "nope.csv", brand)
    _assert_failed_cleanly(factory, brand, info.value, "file not found")

    with pytest.raises(CatalogImportError) as info:
        import_catalog(factory, SAMPLES / "catalog.csv", brand, fmt="gmc")
    _assert_failed_cleanly(factory, brand, info.value, "no 'id' or 'item_group_id' column")

    with pytest.raises(CatalogImportError) as info:
        import_catalog(factory, SAMPLES / "catalog.csv", brand, fmt="generic")
    _assert_failed_cleanly(factory, brand, info.value, "has no column_map")


def test_failed_run_keeps_earlier_data(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    """A bad file after a good one changes nothing that the good one wrote."""
    import_catalog(factory, SAMPLES / "catalog.csv", brand)
    before = products(factory, brand)
    bad = tmp_path / "bad.csv"
    shutil.copy(SAMPLES / "catalog.csv", bad)
    bad.write_text(HEADER + "\n")
    with pytest.raises(CatalogImportError, match="no data rows"):
        import_catalog(factory, bad, brand)
    assert products(factory, brand) == before


def test_unclosed_quote_in_a_full_width_last_row(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = write(
        tmp_path, f'{HEADER}\np1,Tee,,Color,Red,S1,10,\np2,Mug,,Color,Red,M1,5,"https://x\n'
    )
    summary = import_catalog(factory, path, brand)
    assert summary.imported == 1
    assert row_errors(factory, summary.run_id) == [(3, None, "quoted field is never closed")]


def test_auto_prefers_the_brand_column_map_over_gmc(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    cfg = brand.model_copy(update={"column_map": {"sku": "style", "title": "title"}})
    path = write(tmp_path, "id,style,title\n1,ST-1,Tee\n2,ST-1,Tee\n")
    summary = import_catalog(factory, path, cfg)
    assert (summary.format, summary.imported) == ("generic", 1)
    assert [v["sku"] for v in products(factory, cfg)["ST-1"]["variants"]] == ["ST-1", "ST-1"]
    # Without a column_map the same columns read as a Google Merchant feed keyed by id.
    assert import_catalog(factory, path, brand).format == "gmc"


def test_a_crash_mid_import_rolls_back_and_records_the_failed_run(
    factory: sessionmaker[Session], brand: BrandConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catalog.importing.import_store import ImportStore

    def boom(self: ImportStore) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(ImportStore, "apply", boom)
    with pytest.raises(RuntimeError):
        import_catalog(factory, SAMPLES / "catalog.csv", brand)
    assert count(factory, Product, brand) == 0
    with factory() as s:
        run = s.scalars(
            select(ImportRun)
            .join(Brand, Brand.id == ImportRun.brand_id)
            .where(Brand.name == brand.name)
        ).one()
        assert run.status == "failed" and run.error == "RuntimeError: database went away"


def test_progress_reports_bytes_then_apply(
    factory: sessionmaker[Session], brand: BrandConfig
) -> None:
    calls: list[tuple[str, int, int]] = []
    import_catalog(
        factory, SAMPLES / "catalog.csv", brand, progress=lambda *a: calls.append(a), chunk_rows=3
    )
    size = (SAMPLES / "catalog.csv").stat().st_size
    reads = [c for c in calls if c[0] == "read"]
    assert len(reads) >= 3 and all(total == size for _, _, total in reads)
    assert reads[-1][1] == size
    assert calls[-1] == ("apply", 0, 0)


def test_utf16_tab_export_from_a_spreadsheet(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    text = (
        "Handle\tTitle\tOption1 Name\tOption1 Value\tVariant SKU\r\np1\tÉtagère\tColor\tOak\tE1\r\n"
    )
    path = tmp_path / "unicode.txt"
    path.write_bytes(text.encode("utf-16"))  # with a BOM, as spreadsheets write it
    summary = import_catalog(factory, path, brand)
    assert (summary.encoding, summary.format, summary.errors) == ("utf-16", "shopify", 0)
    assert products(factory, brand)["p1"]["title"] == "Étagère"
