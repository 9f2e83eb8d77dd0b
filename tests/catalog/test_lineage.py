"""Lineage: every REF form resolves to the full chain; the reverse queries find what they must."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from catalog.lineage import (
    LineageError,
    assets_by_lora,
    lineage_for,
    outputs_of_import_run,
    parse_lora_ref,
    shot_lineage,
)
from catalog.review import Reviewer, approve
from tests.factories import (
    make_brand,
    make_gated_shot,
    make_import_run,
    make_product,
    make_shot,
)

STYLE = {"name": "acme-style", "sha256": "a1" * 32, "weight": 0.7, "uri": "loras/style.safetensors"}
STYLE_V2 = {**STYLE, "sha256": "b2" * 32}
LIGHT = {"name": "soft_light", "sha256": "c3" * 32, "weight": 0.4, "uri": "loras/light.safetensors"}


def _published(session: Session, **kw: Any) -> Any:
    return make_gated_shot(session, published=True, reviews=[("approve", "alice", "ok")], **kw)


def test_chain_has_every_link(session: Session) -> None:
    brand = make_brand(session)
    run = make_import_run(session, brand, source_uri="s3://in/acme.csv", file_sha256="f" * 64)
    shot = _published(
        session,
        brand=brand,
        import_run=run,
        sku="TEE-1",
        adapters=[STYLE, LIGHT],
        sanitizer_removals=[{"term": "Nike", "kind": "competitor", "field": "title"}],
        seed=1234,
    )
    chain = shot_lineage(session, shot.id)
    assert chain is not None
    assert chain["csv"] == {
        "import_run_id": run.id,
        "uri": "s3://in/acme.csv",
        "sha256": "f" * 64,
        "format": "shopify",
        "line": 2,  # the variant's own line (TEE-1-RED)
        "product_line": 2,
        "variant_lines": [2],
        "imported_at": chain["csv"]["imported_at"],
    }
    assert chain["sku"] == "TEE-1-RED" and chain["product_key"] == "TEE-1"
    assert chain["product_revision"]["revision"] == 1
    assert chain["brand_config"] == {
        "digest": brand.config_digest,
        "current_digest": brand.config_digest,
        "current_version": 1,
        "is_current": True,
    }
    assert chain["template"] == {"name": "hero_white", "digest": shot.template_digest}
    assert chain["prompt"]["sanitizer_removals"] == [
        {"term": "Nike", "kind": "competitor", "field": "title"}
    ]
    assert chain["model"]["id"] == "tiny" and len(chain["model"]["digest"]) == 64
    assert [lo["name"] for lo in chain["loras"]] == ["acme-style", "soft_light"]
    assert chain["sampling"] == {
        "seed": 1234,
        "steps": 4,
        "guidance": 5.0,
        "scheduler": "euler",
        "width": 64,
        "height": 64,
    }
    assert chain["generation"]["raw_sha256"] == shot.generation.sha256
    assert chain["filter"]["decision"] == "pending_review"
    assert {s["name"] for s in chain["filter"]["scores"]} == {"nsfw", "Nike", "product_match"}
    assert chain["watermark"]["payload"] == shot.watermark.payload
    assert chain["watermark"]["verified"] is True
    assert chain["review"]["state"] == "approved"
    assert [(e["action"], e["reviewer"]) for e in chain["review"]["events"]] == [
        ("approve", "alice")
    ]
    assert chain["asset"]["key"] == shot.asset.key
    assert chain["asset"]["sha256"] == shot.asset.sha256 == shot.watermark.image_sha256
    assert chain["asset"]["etag"]


def test_variant_line_and_stale_brand_config(session: Session) -> None:
    brand = make_brand(session)
    run = make_import_run(session, brand)
    rev = make_product(session, brand, "SOFA", import_run=run, line=10)
    blue = make_shot(
        session,
        rev,
        state="pending_review",
        variant={"sku": "SOFA-BLU", "options": {"Color": "Blue"}},
    )
    by_options = make_shot(
        session,
        rev,
        state="pending_review",
        template="other",
        variant={"options": {"Color": "Blue"}},
    )
    brand.config_digest = "9" * 64  # the brand YAML changed after planning
    session.flush()
    chain = shot_lineage(session, blue.id)
    assert chain is not None
    assert chain["csv"]["line"] == 11 and chain["csv"]["product_line"] == 10
    assert chain["brand_config"]["is_current"] is False
    assert chain["generation"] is None and chain["asset"] is None
    other = shot_lineage(session, by_options.id)
    assert other is not None and other["csv"]["variant_lines"] == [11]


def test_every_ref_form(session: Session) -> None:
    shot = _published(session, sku="MUG-7")
    asset, wm, gen = shot.asset, shot.watermark, shot.generation
    refs = {
        f"shot:{shot.id}": "shot",
        f"asset:{asset.id}": "asset",
        asset.key: "key",
        wm.image_key: "key",
        gen.blob_key: "key",
        f"s3://bucket/{asset.key}": "key",
        f"some/prefix/{asset.key}": "key",
        "MUG-7": "sku",
        "MUG-7-RED": "sku",  # a variant sku
        "sku:MUG-7": "sku",
    }
    for ref, kind in refs.items():
        result = lineage_for(session, ref)
        assert result["matched"] == kind, ref
        assert [c["shot_id"] for c in result["chains"]] == [shot.id], ref


def test_sku_matches_every_shot(session: Session) -> None:
    brand = make_brand(session)
    a = make_gated_shot(session, brand=brand, sku="12345")
    rev = a.product_revision
    b = make_shot(session, rev, template="lifestyle", state="planned")
    result = lineage_for(session, "12345")  # a numeric sku is a sku, not an id
    assert [c["shot_id"] for c in result["chains"]] == [a.id, b.id]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("shot:99999999", "no such shot"),
        ("asset:99999999", "no such asset"),
        ("shot:abc", "not a number"),
        # str.isdigit() is true for these, and int() raises on "²" or reads "١٢" as 12.
        ("asset:²", "not a number"),
        ("shot:١٢", "not a number"),
        ("shot: 12", "not a number"),
        ("a/b/c.png", "no asset, final image or raw image"),
        ("NOPE-SKU", "no shots for this sku"),
        ("4242", "write shot:N or asset:N"),
        ("  ", "empty"),
    ],
)
def test_unknown_refs(session: Session, ref: str, message: str) -> None:
    with pytest.raises(LineageError, match=message):
        lineage_for(session, ref)
    assert shot_lineage(session, 99999999) is None


def test_assets_by_lora(session: Session) -> None:
    brand = make_brand(session)
    v1 = _published(session, brand=brand, adapters=[STYLE, LIGHT])
    v2 = _published(session, brand=brand, adapters=[STYLE_V2])
    light_only = _published(session, brand=brand, adapters=[LIGHT])
    unpublished = make_gated_shot(session, brand=brand, adapters=[STYLE])
    # "_" is a LIKE wildcard: "acme_style" must find only itself, not "acme-style"
    underscore = _published(session, brand=brand, adapters=[{**STYLE, "name": "acme_style"}])
    assert [r["shot_id"] for r in assets_by_lora(session, "acme_style")] == [underscore.id]

    found = assets_by_lora(session, "acme-style")
    assert [r["shot_id"] for r in found] == [v1.id, v2.id]
    assert unpublished.id not in [r["shot_id"] for r in found]
    assert found[0]["lora"] == {"name": "acme-style", "sha256": STYLE["sha256"], "weight": 0.7}
    assert found[0]["key"] == v1.asset.key
    # pinned to one version (a recall of a bad LoRA file)
    assert [r["shot_id"] for r in assets_by_lora(session, "acme-style", "b2b2b2b2")] == [v2.id]
    assert [r["shot_id"] for r in assets_by_lora(session, "acme-style", STYLE["sha256"])] == [v1.id]
    assert [r["shot_id"] for r in assets_by_lora(session, "soft_light")] == [v1.id, light_only.id]
    assert assets_by_lora(session, "unknown") == []


def test_parse_lora_ref() -> None:
    assert parse_lora_ref("style") == ("style", None)
    assert parse_lora_ref("style@ABCDEF12") == ("style", "abcdef12")
    for bad in ("@abcdef12", "style@xyz", "style@abc"):
        with pytest.raises(LineageError):
            parse_lora_ref(bad)


def test_outputs_of_import_run(session: Session) -> None:
    brand = make_brand(session)
    run1, run2 = make_import_run(session, brand), make_import_run(session, brand)
    published = _published(session, brand=brand, import_run=run1)
    pending = make_gated_shot(session, brand=brand, import_run=run1)
    rejected = make_gated_shot(session, brand=brand, import_run=run1, decision="rejected")
    make_gated_shot(session, brand=brand, import_run=run2)
    approve(session, [pending.id], Reviewer("bob", "bob"))

    out = outputs_of_import_run(session, run1.id)
    assert out["run"]["id"] == run1.id and out["run"]["uri"] == run1.source_uri
    assert [s["shot_id"] for s in out["shots"]] == [published.id, pending.id, rejected.id]
    assert out["states"] == {"published": 1, "approved": 1, "rejected": 1}
    assert out["shots"][0]["asset_key"] == published.asset.key
    assert len(out["revisions"]) == 3
    with pytest.raises(LineageError, match="import run 99999999: no such run"):
        outputs_of_import_run(session, 99999999)


def test_an_omitted_watermark_says_why(session: Session) -> None:
    """A white_background shot published unmarked: lineage names the reason, not just a
    method string."""
    from pipeline.types import WATERMARK_OMITTED_WHITE
    from tests.factories import make_watermark

    brand = make_brand(session)
    shot = make_shot(session, make_product(session, brand, "PLAIN-1"))
    make_watermark(session, shot, method=WATERMARK_OMITTED_WHITE, verified=False)
    chain = lineage_for(session, f"shot:{shot.id}")["chains"][0]
    assert chain["watermark"]["method"] == WATERMARK_OMITTED_WHITE
    assert chain["watermark"]["note"].startswith("omitted (white_background slot")
    marked = make_shot(session, make_product(session, brand, "PLAIN-2"))
    make_watermark(session, marked)
    assert lineage_for(session, f"shot:{marked.id}")["chains"][0]["watermark"]["note"] is None
