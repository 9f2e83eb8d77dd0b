"""Shot planning on SQLite and Postgres: grouping, idempotency, revisions, seeds, LoRAs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import catalog.planning as planning
from catalog import migrate
from catalog.brands import upsert_brand
from catalog.db import make_engine, make_sessionmaker
from catalog.importing.importer import import_catalog
from catalog.models import LoraAdapter, Product, ProductRevision, Shot
from catalog.planning import PlanningError, plan_shots, visual_variants
from pipeline.brand.config import BrandConfig
from pipeline.brand.loader import load_brand
from pipeline.brand.seeds import derive_seed
from pipeline.brand.templates import ClipTokenCounter, PromptRenderer
from pipeline.settings import Settings
from tests.conftest import ROOT, create_pg_database, drop_pg_database

COLOURS = ["Red", "Blue", "Green", "Black"]
SIZES = ["S", "M", "L"]
PIN = hashlib.sha256(b"tiny lora").hexdigest()


@pytest.fixture(scope="module")
def counter() -> ClipTokenCounter:
    c = ClipTokenCounter()
    c.count("warm up")
    return c


def tee_data(title: str = "Classic Tee", **extra: Any) -> dict[str, Any]:
    """A Shopify-style product: 12 variants, 4 colours x 3 sizes (as the importer writes it)."""
    variants = [
        {
            "sku": f"TEE-{c[:3].upper()}-{s}",
            "options": {"Color": c, "Size": s},
            "price": "19.00",
            "image": None,
            "line": 2 + i,
        }
        for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SIZES)
    ]
    return {
        "key": "classic-tee",
        "title": title,
        "body_html": "<p>Soft <b>cotton</b> tee.</p>",
        "vendor": "ACME",
        "product_type": "T-Shirt",
        "tags": ["cotton", "basics"],
        "options": ["Color", "Size"],
        "images": [],
        "variants": variants,
        "extra": {},
        **extra,
    }


def add_product(
    session: Session, cfg: BrandConfig, key: str, data: dict[str, Any], revision: int = 1
) -> ProductRevision:
    """Insert (or add a revision to) a product the way the importer does, and make it current."""
    brand = upsert_brand(session, cfg)
    product = session.scalar(
        select(Product).where(Product.brand_id == brand.id, Product.sku == key)
    )
    if product is None:
        product = Product(brand_id=brand.id, sku=key)
        session.add(product)
        session.flush()
    rev = ProductRevision(
        product_id=product.id,
        revision=revision,
        content_hash=hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
        data=data,
        source_line=2,
    )
    session.add(rev)
    session.flush()
    product.current_revision_id = rev.id
    session.flush()
    return rev


@pytest.fixture
def acme() -> BrandConfig:
    return load_brand(ROOT / "samples" / "brands" / "acme.yaml")


@pytest.fixture
def settings(tmp_settings: Settings) -> Settings:
    return tmp_settings


def _shots(session: Session, ids: list[int]) -> list[Shot]:
    return list(session.scalars(select(Shot).where(Shot.id.in_(ids)).order_by(Shot.id)))


def test_colour_variants_grouped_sizes_not(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    add_product(session, acme, "classic-tee", tee_data())
    summary = plan_shots(session, acme, settings)
    # 4 colours x 3 text templates; the 2 packshot templates skip it: the tee has no image.
    assert (summary.created, summary.existing, summary.skipped) == (12, 0, 8)
    assert all("no image in the catalog" in w for w in summary.warnings if "packshot" in w)
    shots = _shots(session, summary.shots)
    for template in ("hero_white", "lifestyle_kitchen", "flat_lay"):
        mine = [s for s in shots if s.template_name == template]
        assert sorted(s.variant["options"]["Color"] for s in mine) == sorted(COLOURS)
        assert all(set(s.variant["options"]) == {"Color"} for s in mine)
    red = next(s for s in shots if s.variant_key == "Color=Red" and s.template_name == "hero_white")
    assert red.variant["skus"] == ["TEE-RED-S", "TEE-RED-M", "TEE-RED-L"]
    assert red.variant["lines"] == [2, 3, 4] and red.variant["sku"] == "TEE-RED-S"
    assert "Classic Tee in Red" in red.prompt
    assert (red.width, red.height, red.steps, red.scheduler) == (256, 256, 4, "euler")
    assert red.state == "planned" and red.model_id == "tiny"
    assert red.brand_config_digest == acme.digest()
    assert red.template_digest == acme.template_digest("hero_white")


def test_products_without_visual_options_get_one_shot_per_template(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    sized = tee_data()
    for v in sized["variants"]:
        v["options"] = {"Size": v["options"]["Size"]}
    add_product(session, acme, "sized", {**sized, "key": "sized", "options": ["Size"]})
    add_product(session, acme, "plain", {**tee_data(), "key": "plain", "variants": []})
    summary = plan_shots(session, acme, settings, templates=["hero_white"])
    shots = _shots(session, summary.shots)
    assert summary.created == 2 and [s.variant_key for s in shots] == ["", ""]
    assert [len(s.variant["skus"]) for s in shots] == [0, 12]  # ordered by product key


def test_visual_option_names_match_ignoring_case_and_material_counts() -> None:
    data = {
        "options": ["colour", "Material", "Size"],
        "variants": [
            {"sku": "a", "options": {"colour": "Red", "Material": "Wool", "Size": "S"}, "line": 2},
            {"sku": "b", "options": {"colour": "Red", "Material": "Wool", "Size": "M"}, "line": 3},
            {"sku": "c", "options": {"colour": "Red", "Material": "Silk", "Size": "S"}, "line": 4},
        ],
    }
    vv = visual_variants(data, ["Color", "Colour", "Material"])
    assert [v.key for v in vv] == ["colour=Red;Material=Wool", "colour=Red;Material=Silk"]
    assert vv[0].skus == ["a", "b"] and vv[1].lines == [4]


def test_planning_is_idempotent(session: Session, acme: BrandConfig, settings: Settings) -> None:
    add_product(session, acme, "classic-tee", tee_data())
    first = plan_shots(session, acme, settings)
    second = plan_shots(session, acme, settings)
    assert (second.created, second.existing) == (0, 12)
    assert second.shots == first.shots
    assert session.scalar(select(func.count()).select_from(Shot)) == 12


def test_concurrent_planner_rows_are_adopted(
    session: Session, acme: BrandConfig, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_product(session, acme, "classic-tee", tee_data())
    first = plan_shots(session, acme, settings, templates=["hero_white"])
    # Pretend another planner inserted them after we looked: the unique constraint decides.
    monkeypatch.setattr(planning, "_existing", lambda _s, _ids: {})
    again = plan_shots(session, acme, settings, templates=["hero_white"])
    assert (again.created, again.existing) == (0, 4)
    assert sorted(again.shots) == sorted(first.shots)
    assert session.scalar(select(func.count()).select_from(Shot)) == 4


def test_new_revision_gets_new_shots_and_old_ones_stay(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    rev1 = add_product(session, acme, "classic-tee", tee_data())
    first = plan_shots(session, acme, settings, templates=["hero_white"])
    rev2 = add_product(session, acme, "classic-tee", tee_data("Classic Tee v2"), revision=2)
    second = plan_shots(session, acme, settings, templates=["hero_white"])
    assert (second.created, second.existing) == (4, 0)
    assert not set(first.shots) & set(second.shots)
    old, new = _shots(session, first.shots), _shots(session, second.shots)
    assert {s.product_revision_id for s in old} == {rev1.id}  # history kept
    assert {s.product_revision_id for s in new} == {rev2.id}
    assert all("Classic Tee v2" in s.prompt for s in new)
    by_key = {s.variant_key: s.seed for s in old}
    assert all(s.seed != by_key[s.variant_key] for s in new)


def test_seeds_are_derived_and_stable(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    add_product(session, acme, "classic-tee", tee_data())
    summary = plan_shots(session, acme, settings)
    seeds = set()
    for s in _shots(session, summary.shots):
        assert s.seed == derive_seed("acme", "classic-tee", s.variant_key, s.template_name, 1)
        seeds.add(s.seed)
    assert len(seeds) == 12
    # Reproducible: the literal for one shot never changes between releases.
    assert derive_seed("acme", "classic-tee", "Color=Red", "hero_white", 1) == 8019836235293601982


def test_loras_resolved_recorded_and_registered(
    session: Session, tmp_path: Path, settings: Settings, counter: ClipTokenCounter
) -> None:
    (tmp_path / "loras").mkdir()
    # A real LoRA for the tiny model: plan looks inside it (issue 27).
    sample = ROOT / "samples" / "loras" / "acme_style_tiny.safetensors"
    (tmp_path / "loras" / "style.safetensors").write_bytes(sample.read_bytes())
    brand_file = tmp_path / "lora_brand.yaml"
    brand_file.write_text(
        f"""\
name: lorabrand
loras:
  - {{name: style, path: loras/style.safetensors, sha256: {PIN}, weight: 0.8,
      trigger_word: acmestyle, version: "2"}}
templates:
  hero:
    preset: tiny_fast
    prompt: "photo of {{{{ product.title }}}}"
  plain:
    preset: tiny_fast
    prompt: "photo of {{{{ product.title }}}}"
    loras: {{}}
  strong:
    preset: tiny_fast
    prompt: "{{{{ lora.style }}}} photo of {{{{ product.title }}}}"
    loras: {{style: 1.2}}
""",
        encoding="utf-8",
    )
    cfg = load_brand(brand_file)
    add_product(session, cfg, "mug", {**tee_data("Mug"), "key": "mug", "variants": []})
    renderer = PromptRenderer(cfg, token_counter=counter)
    summary = plan_shots(session, cfg, settings, renderer=renderer)
    shots = {s.template_name: s for s in _shots(session, summary.shots)}
    uri = str((tmp_path / "loras" / "style.safetensors").resolve())
    assert shots["hero"].adapters == [
        {"name": "style", "sha256": PIN, "weight": 0.8, "uri": uri, "trigger_word": "acmestyle"}
    ]
    assert shots["hero"].prompt == "acmestyle, photo of Mug"
    assert shots["plain"].adapters == [] and shots["plain"].prompt == "photo of Mug"
    assert shots["strong"].adapters[0]["weight"] == 1.2
    assert shots["strong"].prompt == "acmestyle photo of Mug"
    plan_shots(session, cfg, settings, renderer=renderer)
    rows = list(session.scalars(select(LoraAdapter).where(LoraAdapter.name == "style")))
    assert len(rows) == 1
    assert (rows[0].sha256, rows[0].uri, rows[0].default_weight, rows[0].version) == (
        PIN,
        uri,
        0.8,
        "2",
    )


def test_untrusted_catalog_text_sanitized_and_literal(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    title = "Runner {{ 7*7 }} {% for x in range(10**9) %}, compatible with Nike shoes"
    add_product(session, acme, "runner", {**tee_data(title), "key": "runner", "variants": []})
    summary = plan_shots(session, acme, settings, templates=["hero_white"])
    [shot] = _shots(session, summary.shots)
    assert "{{ 7*7 }} {% for x in range(10**9) %}" in shot.prompt
    assert "nike" not in shot.prompt.lower()
    assert shot.sanitizer_removals == [
        {"term": "Nike", "kind": "competitor", "field": "prompt", "match": "Nike", "count": 1}
    ]


def test_long_prompts_and_render_failures_are_reported(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    cfg = acme.model_copy(deep=True)
    cfg.templates["strict"] = cfg.templates["hero_white"].model_copy(
        update={"prompt": "{{ product.title }} in {{ variant.Color }}"}
    )
    long_title = " ".join(f"word{i}" for i in range(90))
    add_product(session, cfg, "long", {**tee_data(long_title), "key": "long"})
    add_product(session, cfg, "plain", {**tee_data(), "key": "plain", "variants": []})
    summary = plan_shots(session, cfg, settings, templates=["hero_white", "strict"])
    assert summary.skipped == 1  # "plain" has no Color for the strict template
    assert any(w.startswith("plain [-] strict: skipped:") for w in summary.warnings)
    long_shot = _shots(session, summary.shots)[0]
    assert any("tokens; the text encoder reads 75" in w for w in long_shot.prompt_warnings)
    assert any(w.startswith("long [Red] hero_white: prompt is") for w in summary.warnings)


def test_model_override_templates_filter_and_unknown_template(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    add_product(session, acme, "classic-tee", tee_data())
    custom = settings.model_copy(update={"model": "org/some-model"})
    summary = plan_shots(session, acme, custom, templates=["flat_lay"])
    shots = _shots(session, summary.shots)
    assert {s.template_name for s in shots} == {"flat_lay"} and len(shots) == 4
    assert {s.model_id for s in shots} == {"org/some-model"}
    assert {s.steps for s in shots} == {3}  # the template overrides its preset
    with pytest.raises(PlanningError, match="no template 'nope'"):
        plan_shots(session, acme, settings, templates=["nope"])


def test_changed_template_keeps_old_shots_and_warns(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    add_product(session, acme, "classic-tee", tee_data())
    first = plan_shots(session, acme, settings, templates=["hero_white"])
    changed = acme.model_copy(deep=True)
    changed.templates["hero_white"].prompt = "new photo of {{ product.title }}"
    again = plan_shots(session, changed, settings, templates=["hero_white"])
    assert (again.created, again.existing) == (0, 4) and again.shots == first.shots
    assert any("template hero_white changed since 4 existing shot(s)" in w for w in again.warnings)
    assert all(s.brand_config_digest == acme.digest() for s in _shots(session, first.shots))


def test_only_current_revisions_of_this_brand_are_planned(
    session: Session, acme: BrandConfig, settings: Settings
) -> None:
    other = acme.model_copy(update={"name": "other"})
    add_product(session, other, "theirs", tee_data())
    add_product(session, acme, "classic-tee", tee_data())
    add_product(session, acme, "classic-tee", tee_data("Newer"), revision=2)
    summary = plan_shots(session, acme, settings, templates=["hero_white"])
    assert summary.products == 1 and summary.created == 4
    assert all("Newer" in s.prompt for s in _shots(session, summary.shots))


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own: the importer commits, so the rolled-back session won't do."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'plan.db'}"
        migrate.upgrade(url)
        yield url
    else:
        url = create_pg_database("shotline_plan")
        yield url
        drop_pg_database(url)


def test_shopify_sample_import_then_plan(
    fresh_url: str, acme: BrandConfig, settings: Settings
) -> None:
    engine = make_engine(fresh_url)
    factory = make_sessionmaker(engine)
    try:
        import_catalog(factory, ROOT / "samples" / "catalog.csv", acme)
        with factory.begin() as s:
            summary = plan_shots(s, acme, settings, templates=["hero_white"])
            shots = _shots(s, summary.shots)
        with factory.begin() as s:
            again = plan_shots(s, acme, settings, templates=["hero_white"])
    finally:
        engine.dispose()
    by_product: dict[str, list[Shot]] = {}
    for shot in shots:
        by_product.setdefault(shot.variant["skus"][0].split("-")[1], []).append(shot)
    # Linen pillow: 2 colours x 2 sizes -> 2 shots; each groups both sizes of its colour.
    pillow = sorted(by_product["PIL"], key=lambda s: s.variant_key)
    assert [s.variant_key for s in pillow] == ["Color=Sage", "Color=Terracotta"]
    assert pillow[0].variant["skus"] == ["ACME-PIL-SAGE-45", "ACME-PIL-SAGE-60"]
    assert len(pillow[0].variant["lines"]) == 2
    # A "Title / Default Title" product has no visual option: one shot.
    assert [s.variant_key for s in by_product["BRD"]] == [""]
    assert (again.created, again.existing) == (0, summary.created)
    candle = by_product["CND"][0]
    assert "{{ 7*7 }}" in candle.prompt  # untrusted title stays literal
