"""Import under hostile or careless input (issue 13): each class has its test here.

6: a header over 64 KiB; a file whose every row failed is not a success.
7: one cp1252 row in a UTF-8 file doesn't turn the good rows into mojibake.
8: --encoding names that can't decode text are refused in one line.
9: conflicting duplicate rows are warnings naming both lines and the one kept.
12: a stray NUL fails its row; a binary file is still refused whole.
5: one huge line is a row error and memory stays bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.importing.csv_source import CatalogFileError
from catalog.importing.importer import CatalogImportError, import_catalog
from catalog.models import ImportRun
from pipeline.brand.config import BrandConfig
from tests.catalog.test_import import HEADER, products, row_errors, write
from tests.conftest import ROOT


def test_a_header_over_64_kib_is_read_whole(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    extra = [f"extra_column_{i:06d}" for i in range(6000)]  # ~110 KB of header
    head = HEADER + "," + ",".join(extra)
    row = "p1,Tee,,Color,Red,S1,10,https://x/1.jpg" + "," * len(extra)
    summary = import_catalog(factory, write(tmp_path, f"{head}\n{row}\n"), brand)
    assert len(head) > 64 * 1024
    assert (summary.format, summary.imported, summary.errors) == ("shopify", 1, 0)


def test_every_row_failed_is_a_failed_run_with_its_errors_kept(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = write(tmp_path, f"{HEADER}\np1,Tee,,Color,Red,S1,10\np2,Mug,,Color,Red,S2\n")
    summary = import_catalog(factory, path, brand)
    assert summary.imported == 0 and summary.errors == 2
    assert summary.status == "failed" and summary.error and "every data row failed" in summary.error
    with factory() as s:
        run = s.scalars(select(ImportRun).where(ImportRun.id == summary.run_id)).one()
        assert run.status == "failed" and run.error == summary.error
    assert [line for line, _, _ in row_errors(factory, summary.run_id)] == [2, 3]


def test_one_cp1252_row_in_a_utf8_file_leaves_the_utf8_rows_intact(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    data = (
        f"{HEADER}\n".encode()
        + "p1,Café Crème,,Color,Red,S1,10,\n".encode()
        + "p2,Crème brûlée,,Color,Red,S2,10,\n".encode("cp1252")
        + "p3,Zoë ☕,,Color,Red,S3,10,\n".encode()
    )
    path = tmp_path / "mixed.csv"
    path.write_bytes(data)
    summary = import_catalog(factory, path, brand)
    assert summary.imported == 3 and summary.errors == 0
    got = products(factory, brand)
    assert got["p1"]["title"] == "Café Crème"
    assert got["p2"]["title"] == "Crème brûlée"
    assert got["p3"]["title"] == "Zoë ☕"
    [warning] = [w for w in summary.warnings if "cp1252" in w]
    assert "line(s) 3 " in warning


def test_an_all_cp1252_file_is_still_read_as_cp1252(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = write(tmp_path, f"{HEADER}\np1,Café,,Color,Red,S1,10,\n", encoding="cp1252")
    summary = import_catalog(factory, path, brand)
    assert summary.encoding == "cp1252" and products(factory, brand)["p1"]["title"] == "Café"


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("rot13", "not a text encoding"),
        ("base64", "not a text encoding"),
        ("hex", "not a text encoding"),
        ("zlib_codec", "not a text encoding"),
        ("utf-16", "no byte-order mark"),
        ("no-such-codec", "unknown encoding"),
    ],
)
def test_encodings_that_cannot_decode_text_are_refused(
    factory: sessionmaker[Session],
    brand: BrandConfig,
    tmp_path: Path,
    encoding: str,
    expected: str,
) -> None:
    path = write(tmp_path, f"{HEADER}\np1,Tee,,Color,Red,S1,10,\n", encoding="utf-16-le")
    with pytest.raises(CatalogImportError) as info:
        import_catalog(factory, path, brand, encoding=encoding)
    message = str(info.value)
    assert expected in message and "--encoding" in message and "\n" not in message


def test_utf16_le_without_bom_imports_when_named(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = write(tmp_path, f"{HEADER}\np1,Tee,,Color,Red,S1,10,\n", encoding="utf-16-le")
    summary = import_catalog(factory, path, brand, encoding="utf-16-le")
    assert summary.imported == 1


def test_conflicting_duplicate_rows_are_warnings_naming_both_lines(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        f"{HEADER},Vendor\n"
        "p1,Tee,soft,Size,S,S1,1,,Acme\n"
        "p1,Tee Shirt,soft,Size,S,S1,99,,Other\n"  # same handle: title, vendor, price differ
        "p1,,,,M,S2,5,,\n",
    )
    summary = import_catalog(factory, path, brand)
    assert summary.imported == 1 and summary.row_warnings == 3
    text = "\n".join(summary.warnings)
    assert "line 3: 'p1' title 'Tee Shirt' differs from line 2 ('Tee'); line 2 was kept" in text
    assert "vendor 'Other' differs from line 2 ('Acme')" in text
    assert "line 3: conflicting duplicate of SKU 'S1' from line 2 (price '99' vs '1')" in text
    got = products(factory, brand)["p1"]
    assert got["title"] == "Tee" and [v["price"] for v in got["variants"]] == ["1", "5"]


def test_a_stray_nul_fails_its_row_only(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(
        f"{HEADER}\np1,Tee,,Color,Red,S1,10,\n".encode()
        + b"p2,M\x00ug,,Color,Red,S2,5,\n"
        + b"p3,Cup,,Color,Red,S3,5,\n"
    )
    summary = import_catalog(factory, path, brand)
    assert summary.imported == 2
    assert row_errors(factory, summary.run_id) == [(3, "Title", "contains a NUL byte")]


@pytest.mark.parametrize(
    "payload",
    [bytes(range(256)) * 32, b"\x00\x01" * 4000, b"a,b\n" + b"\x00" * 200 + b"x" * 1000],
)
def test_binary_files_are_still_refused_whole(tmp_path: Path, payload: bytes) -> None:
    from catalog.importing.csv_source import inspect_file

    path = tmp_path / "blob.csv"
    path.write_bytes(payload)
    with pytest.raises(CatalogFileError, match="binary file"):
        inspect_file(path)


def test_one_huge_line_is_a_row_error_in_bounded_memory(tmp_path: Path) -> None:
    """A 200 MB line of ``a,``: the old tokenizer built one record of 100 million fields
    (2.6 GB for 300 MB). Now it is a row error (the line is skipped, never held) under a
    1.2 GB address-space limit."""
    path = tmp_path / "huge.csv"
    with path.open("wb") as fh:
        fh.write(f"{HEADER}\np1,Tee,,Color,Red,S1,10,\n".encode())
        chunk = b"a," * (1 << 20)
        for _ in range(100):  # 200 MiB, far over MAX_LINE_BYTES
            fh.write(chunk)
        fh.write(b"\np2,Mug,,Color,Red,S2,5,\n")
    db = tmp_path / "huge.db"
    code = textwrap.dedent(
        f"""
        import json, resource
        from pathlib import Path
        from catalog import migrate
        from catalog.db import make_engine, make_sessionmaker
        from catalog.importing.importer import import_catalog
        from pipeline.brand.loader import find_brand
        migrate.upgrade("sqlite:///{db}")
        brand = find_brand(Path("{ROOT / "samples" / "brands"}"), "acme")
        limit = 1200 << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        s = import_catalog(make_sessionmaker(make_engine("sqlite:///{db}")), Path("{path}"), brand)
        print(json.dumps({{"imported": s.imported, "errors": s.errors}}))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"imported": 2, "errors": 1}
