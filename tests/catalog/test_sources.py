"""Image references at import (Shopify, Google Merchant, generic column_map) on SQLite and
real Postgres: every reference kept with its position and variant, bad ones never crash."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.importing.importer import import_catalog
from catalog.models import Brand, Product, SourceImage, SourceImageRef
from catalog.packshots.sources import find_sources, refs_for_revision, sources_to_fetch
from pipeline.brand.config import BrandConfig
from pipeline.sources.refs import normalize_ref, ref_base, url_digest

SHOPIFY = (
    "Handle,Title,Option1 Name,Option1 Value,Variant SKU,Image Src,Image Position,Variant Image\n"
    "mug,Mug,Color,Red,MUG-R,https://cdn.example.com/mug-2.jpg,2,https://cdn.example.com/mug-2.jpg\n"
    "mug,,,Blue,MUG-B,https://cdn.example.com/mug-1.jpg,1,packshots/mug-blue.png\n"
    "mug,,,,,javascript:alert(1),3,\n"
    "mug,,,,,   ,4,\n"
)
GMC = (
    "id\titem_group_id\ttitle\timage_link\tadditional_image_link\tcolor\n"
    "B-1\tbottle\tBottle\thttps://cdn.example.com/b.jpg\t"
    "https://cdn.example.com/b2.jpg, https://cdn.example.com/b3.jpg\tGreen\n"
    "B-2\tbottle\tBottle\thttp://[::1/broken\t\tBlue\n"
)


def _refs(f: sessionmaker[Session], brand: BrandConfig, key: str) -> list[tuple[int, str]]:
    with f() as s:
        product = s.scalars(
            select(Product).join(Brand).where(Brand.name == brand.name, Product.sku == key)
        ).one()
        assert product.current_revision_id is not None
        return [
            (r.position, r.source_image.url)
            for r in refs_for_revision(s, product.current_revision_id)
        ]


def test_shopify_positions_variant_images_and_relative_paths(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(SHOPIFY)
    summary = import_catalog(factory, path, brand)
    assert summary.status == "succeeded", summary
    local = (tmp_path / "packshots" / "mug-blue.png").as_uri()
    # Image Position orders the product images; a variant's own image comes after them.
    assert _refs(factory, brand, "mug") == [
        (1, "https://cdn.example.com/mug-1.jpg"),
        (2, "https://cdn.example.com/mug-2.jpg"),
        (3, "javascript:alert(1)"),  # kept: the fetch refuses it with the reason
        (4, local),
    ]
    with factory() as s:
        pending = s.scalars(select(SourceImage).where(SourceImage.url == local)).one()
        assert pending.status == "pending" and pending.sha256 is None
        brand_id = s.scalars(select(Brand.id).where(Brand.name == brand.name)).one()
        assert len(sources_to_fetch(s, brand_id=brand_id)) == 4
    # Re-importing the same file adds nothing.
    again = import_catalog(factory, path, brand)
    assert again.revisions_new == 0
    with factory() as s:
        assert len(sources_to_fetch(s, brand_id=brand_id)) == 4


def test_gmc_additional_images_and_a_broken_url(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    path = tmp_path / "feed.tsv"
    path.write_text(GMC)
    assert import_catalog(factory, path, brand).status == "succeeded"
    refs = _refs(factory, brand, "bottle")
    assert [url for _, url in refs] == [
        "https://cdn.example.com/b.jpg",
        "https://cdn.example.com/b2.jpg",
        "https://cdn.example.com/b3.jpg",
        "http://[::1/broken",
    ]


def _generic(brand: BrandConfig) -> BrandConfig:
    """The brand reading a generic CSV: Ref, Name and Photo columns."""
    return brand.model_copy(
        update={"column_map": {"sku": "Ref", "title": "Name", "image": "Photo"}}
    )


def test_generic_column_map_image(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    brand = _generic(brand)
    path = tmp_path / "own.csv"
    path.write_text("Ref,Name,Photo\nP-1,Pot,s3://bucket/pots/p1.png\nP-2,Pan,\n")
    assert import_catalog(factory, path, brand, fmt="generic").status == "succeeded"
    assert _refs(factory, brand, "P-1") == [(1, "s3://bucket/pots/p1.png")]
    assert _refs(factory, brand, "P-2") == []
    with factory() as s:
        found = find_sources(s, "s3://bucket/pots/p1.png")
        assert [x.url_sha256 for x in found] == [url_digest("s3://bucket/pots/p1.png")]
        assert s.scalars(select(SourceImageRef).where(SourceImageRef.raw == "")).all() == []


def test_normalize_ref() -> None:
    base = Path("/data/catalogs")
    assert normalize_ref("packshots/a b.png", base) == "file:///data/catalogs/packshots/a%20b.png"
    assert normalize_ref("/abs/x.png", base) == "file:///abs/x.png"
    assert normalize_ref("HTTPS://cdn/x.jpg", base) == "https://cdn/x.jpg"
    assert normalize_ref("  ", base) is None
    assert normalize_ref("x" * 3000, base) is None


def test_relative_refs_of_a_catalog_at_a_url_resolve_next_to_it() -> None:
    # Scheduled ingestion imports a downloaded copy: references are relative to the source.
    s3 = ref_base("s3://feeds/acme/2026-12/catalog.csv")
    assert s3 == "s3://feeds/acme/2026-12/"
    assert normalize_ref("packshots/mug.png", s3) == "s3://feeds/acme/2026-12/packshots/mug.png"
    assert normalize_ref("../shared/a b.png", s3) == "s3://feeds/acme/shared/a b.png"
    assert normalize_ref("..\\up.png", s3) == "s3://feeds/acme/up.png"
    https = ref_base("https://cdn.example.com/feeds/catalog.csv")
    assert normalize_ref("img/a b.png", https) == "https://cdn.example.com/feeds/img/a%20b.png"
    assert normalize_ref("/abs/x.png", s3) == "file:///abs/x.png"  # a local path stays local
    assert ref_base("/data/catalogs/catalog.csv") == Path("/data/catalogs")
    assert ref_base("file:///data/catalogs/catalog.csv") == Path("/data/catalogs")


def test_import_of_a_downloaded_copy_resolves_refs_against_its_source(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    brand = _generic(brand)
    path = tmp_path / "copy.csv"
    path.write_text("Ref,Name,Photo\nP-9,Pot,packshots/p9.png\n")
    summary = import_catalog(
        factory, path, brand, fmt="generic", source_uri="s3://feeds/acme/catalog.csv"
    )
    assert summary.status == "succeeded"
    assert _refs(factory, brand, "P-9") == [(1, "s3://feeds/acme/packshots/p9.png")]


def test_pick_source() -> None:
    from catalog.models import SourceImageRef
    from catalog.packshots.sources import pick_source

    def ref(pos: int) -> SourceImageRef:
        return SourceImageRef(position=pos, raw=f"img{pos}.png", source_image_id=1)

    refs = [ref(2), ref(1), ref(3)]
    assert pick_source(refs, "first", []) == (refs[1], "")
    assert pick_source(refs, "variant", ["img3.png", "img3.png"]) == (refs[2], "")
    assert pick_source(refs, "variant", ["nope.png"]) == (refs[1], "")  # falls back to first
    assert pick_source(refs, 3, []) == (refs[2], "")
    assert pick_source(refs, 7, []) == (None, "the product has no image at position 7 (it has 3)")
    assert pick_source([], "variant", ["x"])[1] == "the product has no image in the catalog"
    assert "unknown image choice" in pick_source(refs, "last", [])[1]


def test_reverse_lineage_from_a_source_image(session: Session) -> None:
    from catalog.lineage import lineage_for
    from catalog.packshots.source_lineage import UnknownSource, outputs_of_source
    from catalog.packshots.sources import ensure_source_images
    from tests.factories import make_asset, make_brand, make_product, make_shot

    brand = make_brand(session)
    rev = make_product(session, brand)
    url = f"https://cdn.example.com/{uuid.uuid4().hex}.png"
    sid = ensure_source_images(session, [url])[url]
    src = session.get(SourceImage, sid)
    assert src is not None
    src.status, src.sha256 = "fetched", "ab" * 32
    cutout = {"method": "flood+grabcut", "params": {"tolerance": 12}, "mask_sha256": "cd" * 32}
    shot = make_shot(
        session,
        rev,
        template="on_white",
        source_image_id=sid,
        packshot={"image": "first", "placement": {"scale": 0.6}, "cutout": cutout},
    )
    other = make_shot(session, rev, template="hero_white")  # text-to-image: not listed
    asset = make_asset(session, shot)
    session.flush()
    for ref in (url, "AB" * 32):
        out = outputs_of_source(session, ref)
        assert [s["shot_id"] for s in out["shots"]] == [shot.id]
        assert out["shots"][0]["asset_key"] == asset.key
        assert out["shots"][0]["mask_sha256"] == "cd" * 32
        assert out["sources"][0]["url"] == url
    chain = lineage_for(session, f"shot:{shot.id}")["chains"][0]
    assert chain["packshot"]["source_image"]["sha256"] == "ab" * 32
    assert chain["packshot"]["cutout"] == cutout and chain["packshot"]["placement"]["scale"] == 0.6
    assert lineage_for(session, f"shot:{other.id}")["chains"][0]["packshot"] is None
    with pytest.raises(UnknownSource, match="no source image"):
        outputs_of_source(session, "https://cdn.example.com/none.png")


def test_packshot_slots_pick_per_variant_and_never_crash(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    """Planning's packshot part on imported rows: the variant's own image, the first, a
    position; a product without images (or without position N) is a reason, not an error."""
    from types import SimpleNamespace

    from catalog.packshots.planning import PackshotSlots
    from catalog.planning import RevisionRow, visual_variants

    path = tmp_path / "catalog.csv"
    path.write_text(SHOPIFY + "bare,Bare,Color,Red,B-R,,,\n")
    assert import_catalog(factory, path, brand).status == "succeeded"
    tpl = {
        "v": SimpleNamespace(source="packshot", image="variant", placement={"scale": 0.6}),
        "f": SimpleNamespace(source="packshot", image="first", placement=None),
        "p3": SimpleNamespace(source="packshot", image=3, placement=None),
        "t2i": SimpleNamespace(),
    }
    with factory() as s:
        rows = [
            RevisionRow(p.sku, rev.id, rev.revision, rev.data)
            for p in s.scalars(select(Product).join(Brand).where(Brand.name == brand.name))
            if (rev := p.current_revision) is not None
        ]
        slots = PackshotSlots.for_chunk(s, list(tpl), tpl, rows)
        mug = next(r for r in rows if r.sku == "mug")
        bare = next(r for r in rows if r.sku == "bare")
        red, blue = visual_variants(mug.data, ["Color"])
        urls = {r.id: r.url for r in s.scalars(select(SourceImage))}

        def url(values: object) -> str:
            assert isinstance(values, dict), values
            return urls[values["source_image_id"]]

        assert url(slots.values("v", mug, red)) == "https://cdn.example.com/mug-2.jpg"
        assert url(slots.values("v", mug, blue)).endswith("/packshots/mug-blue.png")
        assert url(slots.values("f", mug, blue)) == "https://cdn.example.com/mug-1.jpg"
        p3 = slots.values("p3", mug, red)
        assert url(p3) == "javascript:alert(1)"  # planned; its fetch fails with the URL
        assert isinstance(p3, dict) and p3["packshot"]["position"] == 3
        assert slots.values("v", mug, red)["packshot"]["placement"] == {"scale": 0.6}  # type: ignore[index]
        assert slots.values("t2i", mug, red) == {}
        (bare_red,) = visual_variants(bare.data, ["Color"])
        assert slots.values("v", bare, bare_red) == "the product has no image in the catalog"


def test_an_image_position_that_is_a_digit_but_not_a_number_imports(
    factory: sessionmaker[Session], brand: BrandConfig, tmp_path: Path
) -> None:
    # "²" and "٣" pass str.isdigit() but int() refuses the first: before, the import raised.
    path = tmp_path / "catalog.csv"
    path.write_text(
        "Handle,Title,Image Src,Image Position\n"
        "cup,Cup,https://cdn.example.com/cup-a.jpg,²\n"
        "cup,,https://cdn.example.com/cup-b.jpg,1\n",
        encoding="utf-8",
    )
    summary = import_catalog(factory, path, brand)
    assert summary.status == "succeeded", summary
    urls = [url for _, url in _refs(factory, brand, "cup")]
    assert sorted(urls) == [
        "https://cdn.example.com/cup-a.jpg",
        "https://cdn.example.com/cup-b.jpg",
    ]
