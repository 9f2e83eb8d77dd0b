"""Shot planning: one shot per (current product revision, visual variant, template).

A visual variant is a distinct combination of the brand's ``visual_options`` values
among a product's variants: twelve Color x Size variants in four colours are four
visual variants, because size doesn't change how the product looks.

Planning is idempotent on the ``shots`` unique constraint (product_revision_id,
variant_key, template_name): planning twice creates nothing; a new revision gets new
shots and the old revision's shots stay as history. Seeds are derived from (brand,
product key, variant key, template, revision), so a shot can always be reproduced.

Only ``flush()`` here: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from catalog.brands import upsert_brand
from catalog.models import LoraAdapter, Product, ProductRevision, Shot, ShotState
from catalog.packshots.planning import PackshotSlots
from pipeline.brand.config import BrandConfig, ResolvedTemplate
from pipeline.brand.loader import brand_warnings
from pipeline.brand.seeds import derive_seed
from pipeline.brand.templates import PromptRenderer, RenderedPrompt, RenderError
from pipeline.generate.lora_check import check_brand_loras
from pipeline.generate.modelspec import ModelLoadError, check_model
from pipeline.settings import Settings

_CHUNK = 500  # products per query round trip (keeps IN lists well under driver limits)
_MAX_KEY = 255  # shots.variant_key column width


class PlanningError(ValueError):
    """A plan that cannot start (e.g. an unknown template name). One line for the user."""


@dataclass
class PlanSummary:
    created: int = 0
    existing: int = 0
    shots: list[int] = field(default_factory=list)  # created and existing, in plan order
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0  # (product, variant, template) combinations whose prompt failed to render
    brand: str = ""
    templates: list[str] = field(default_factory=list)
    products: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VisualVariant:
    key: str  # "" when the product has no visual options
    options: dict[str, str]  # option name as in the catalog -> value
    skus: list[str]
    lines: list[int]

    @property
    def label(self) -> str:
        return ", ".join(self.options.values()) or "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "options": dict(self.options),
            "sku": self.skus[0] if self.skus else None,
            "skus": list(self.skus),
            "lines": list(self.lines),
        }


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(";", "%3B").replace("=", "%3D")


def variant_key(options: Mapping[str, str]) -> str:
    """``Color=Red;Material=Wool`` (in the given order); hashed when too long for the column."""
    key = ";".join(f"{_escape(k)}={_escape(v)}" for k, v in options.items())
    if len(key) > _MAX_KEY:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def visual_variants(data: Mapping[str, Any], visual_options: Sequence[str]) -> list[VisualVariant]:
    """The product's distinct visual variants, in catalog order (at least one)."""
    wanted = {o.strip().casefold() for o in visual_options}
    order = {str(name): i for i, name in enumerate(data.get("options") or [])}
    groups: dict[str, VisualVariant] = {}
    for v in data.get("variants") or []:
        if not isinstance(v, Mapping):
            continue
        raw_opts = v.get("options")
        opts: Mapping[str, Any] = raw_opts if isinstance(raw_opts, Mapping) else {}
        visual = sorted(
            (
                (str(name), " ".join(str(value).split()))
                for name, value in opts.items()
                if str(name).strip().casefold() in wanted
                and value is not None
                and str(value).strip()
            ),
            key=lambda kv: (order.get(kv[0], len(order)), kv[0]),
        )
        options = dict(visual)
        key = variant_key(options)
        group = groups.get(key)
        if group is None:
            group = groups[key] = VisualVariant(key=key, options=options, skus=[], lines=[])
        if v.get("sku"):
            group.skus.append(str(v["sku"]))
        if isinstance(v.get("line"), int):
            group.lines.append(int(v["line"]))
    return list(groups.values()) or [VisualVariant(key="", options={}, skus=[], lines=[])]


def upsert_adapters(session: Session, brand: BrandConfig) -> list[LoraAdapter]:
    """One ``lora_adapters`` row per (name, sha256) pin the brand uses."""
    rows = []
    for spec in brand.loras:
        row = session.scalar(
            select(LoraAdapter).where(
                LoraAdapter.name == spec.name, LoraAdapter.sha256 == spec.sha256
            )
        )
        if row is None:
            row = LoraAdapter(name=spec.name, sha256=spec.sha256)
            session.add(row)
        row.uri = brand.resolve_uri(spec.path)
        row.version = spec.version
        row.base_family = spec.base_family
        row.default_weight = spec.weight
        row.trigger_word = spec.trigger_word
        rows.append(row)
    session.flush()
    return rows


def _chunks(items: Sequence[int], n: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


@dataclass(frozen=True)
class PlanContext:
    """What every shot of one plan shares: the brand row, the resolved templates, the model."""

    brand: BrandConfig
    brand_id: int
    brand_config_digest: str
    templates: tuple[str, ...]  # in plan order, without duplicates
    resolved: Mapping[str, ResolvedTemplate]
    digests: Mapping[str, str]  # template name -> digest of its resolved definition
    adapters_json: Mapping[str, list[dict[str, Any]]]
    renderer: PromptRenderer
    model_id: str
    # The brand's ControlNet as packshot shots record it (file, sha256, parameters), or None.
    controlnet: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RevisionRow:
    """A product's current revision, as read for planning (plain columns, no entity)."""

    sku: str
    revision_id: int
    revision: int
    data: Mapping[str, Any]

    @property
    def product_key(self) -> str:
        return str(self.data.get("key") or self.sku)


@dataclass(frozen=True)
class ShotSlot:
    """One shot to plan: a product revision, one of its visual variants and a template."""

    row: RevisionRow
    variant: VisualVariant
    template: str
    candidate: int = 0  # 0..N-1 when the template asks for N candidates (pick 1 of N)

    @property
    def key(self) -> tuple[int, str, str, int]:
        """The ``shots`` unique constraint: (product_revision_id, variant_key, template_name,
        candidate)."""
        return (self.row.revision_id, self.variant.key, self.template, self.candidate)

    @property
    def where(self) -> str:
        """How warnings name this shot."""
        return f"{self.row.product_key} [{self.variant.label}] {self.template}"

    def seed(self, brand_name: str) -> int:
        return derive_seed(
            brand_name,
            self.row.product_key,
            self.variant.key,
            self.template,
            self.row.revision,
            candidate=self.candidate,
        )


@dataclass(frozen=True)
class PendingShot:
    """A slot with no shot yet, and the ``shots`` row values to insert for it."""

    slot: ShotSlot
    values: dict[str, Any]


@dataclass(frozen=True)
class ExistingEntry:
    """A plan position already taken by a shot."""

    shot_id: int


@dataclass(frozen=True)
class PendingEntry:
    """A plan position filled by ``pending[index]`` once the chunk is inserted."""

    index: int


PlanEntry = ExistingEntry | PendingEntry


def _insert(session: Session, pending: Sequence[PendingShot]) -> list[tuple[int, bool]]:
    """Insert shots; returns (id, created) per row. A concurrent planner's rows are adopted."""
    if not pending:
        return []
    try:
        with session.begin_nested():
            shots = [Shot(**p.values) for p in pending]
            session.add_all(shots)
            session.flush()
        ids = [(s.id, True) for s in shots]
        for shot in shots:  # written; callers load shots by id when they need them
            session.expunge(shot)
        return ids
    except IntegrityError:
        pass
    # Someone planned some of these since we looked: go one by one under the constraint.
    return [_insert_one(session, p) for p in pending]


def _insert_one(session: Session, pending: PendingShot) -> tuple[int, bool]:
    try:
        with session.begin_nested():
            shot = Shot(**pending.values)
            session.add(shot)
            session.flush()
        return shot.id, True
    except IntegrityError:
        rev_id, vkey, tname, candidate = pending.slot.key
        existing = session.scalar(
            select(Shot.id).where(
                Shot.product_revision_id == rev_id,
                Shot.variant_key == vkey,
                Shot.template_name == tname,
                Shot.candidate == candidate,
            )
        )
        if existing is None:
            raise
        return existing, False


def _existing(
    session: Session, revision_ids: Sequence[int]
) -> dict[tuple[int, str, str, int], tuple[int, str]]:
    rows = session.execute(
        select(
            Shot.id,
            Shot.product_revision_id,
            Shot.variant_key,
            Shot.template_name,
            Shot.candidate,
            Shot.template_digest,
        ).where(Shot.product_revision_id.in_(revision_ids))
    ).all()
    return {
        (r.product_revision_id, r.variant_key, r.template_name, r.candidate): (
            r.id,
            r.template_digest,
        )
        for r in rows
    }


def _template_names(brand: BrandConfig, templates: list[str] | None) -> list[str]:
    """The templates to plan, in order; ``PlanningError`` for a name the brand lacks."""
    names = list(dict.fromkeys(templates)) if templates else list(brand.templates)
    unknown = [t for t in names if t not in brand.templates]
    if unknown:
        raise PlanningError(
            f"brand {brand.name!r} has no template {', '.join(repr(t) for t in unknown)} "
            f"(known: {', '.join(sorted(brand.templates))})"
        )
    return names


def plan_context(
    session: Session,
    brand: BrandConfig,
    settings: Settings,
    templates: list[str] | None = None,
    renderer: PromptRenderer | None = None,
) -> PlanContext:
    """Check the template names, upsert the brand and its LoRA pins, resolve the templates."""
    names = _template_names(brand, templates)
    brand_row = upsert_brand(session, brand)
    upsert_adapters(session, brand)
    resolved = {n: brand.resolve_template(n) for n in names}
    model_id = settings.model or brand.resolved_base_model()
    try:  # shots pin their model: one that can never load is refused before any is planned
        check_model(model_id, settings)
    except ModelLoadError as exc:
        raise PlanningError(f"model {exc}") from None
    matched = _checked_adapters(brand, model_id, settings, resolved)
    return PlanContext(
        controlnet=_controlnet(brand, settings, resolved),
        brand=brand,
        brand_id=brand_row.id,
        brand_config_digest=brand_row.config_digest,
        templates=tuple(names),
        resolved=resolved,
        digests={n: r.digest() for n, r in resolved.items()},
        adapters_json={
            n: [{**a.to_json(), **matched.get(a.name, {})} for a in r.adapters]
            for n, r in resolved.items()
        },
        renderer=renderer or PromptRenderer(brand, templates=names),
        model_id=model_id,
    )


def _checked_adapters(
    brand: BrandConfig, model_id: str, settings: Settings, resolved: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The LoRAs the templates use, checked against the model before any shot pins them
    (``PlanningError``: the first refused one). An adapter allowed to match partly gets its
    matched count into each shot's adapters, so the lineage says what was applied."""
    names = {a.name for r in resolved.values() for a in r.adapters}
    try:
        checks = check_brand_loras(brand, model_id, settings, names) if names else []
    except ModelLoadError as exc:
        raise PlanningError(f"model {exc}") from None
    for c in checks:
        if c.refusal:
            raise PlanningError(f"LoRA {c.name!r}: {c.refusal}")
    return {
        c.name: {"matched_tensors": c.report.matched, "lora_tensors": c.report.total}
        for c in checks
        if c.report is not None and c.report.partial
    }


def _controlnet(
    brand: BrandConfig, settings: Settings, resolved: Mapping[str, ResolvedTemplate]
) -> dict[str, Any] | None:
    """What packshot shots record of the brand's ControlNet: checked now (the file exists, is
    safetensors, matches its pin), so no shot is planned with one that can never load."""
    cn, path = brand.controlnet, brand.resolved_controlnet_path()
    if cn is None or path is None:
        return None
    if not any(t.is_packshot for t in resolved.values()):
        return None
    from pipeline.generate.controlnet import plan_spec

    try:
        return plan_spec(path, cn.sha256, cn.params(), settings).to_json()
    except ModelLoadError as exc:
        raise PlanningError(f"brand {brand.name!r}: {exc}") from None


def shot_row(ctx: PlanContext, slot: ShotSlot, rendered: RenderedPrompt) -> dict[str, Any]:
    """The ``shots`` row values for ``slot`` with its rendered prompt."""
    res = ctx.resolved[slot.template]
    return dict(
        brand_id=ctx.brand_id,
        product_revision_id=slot.row.revision_id,
        variant_key=slot.variant.key,
        candidate=slot.candidate,
        variant=slot.variant.to_json(),
        brand_config_digest=ctx.brand_config_digest,
        template_name=slot.template,
        template_digest=ctx.digests[slot.template],
        prompt=rendered.prompt,
        negative_prompt=rendered.negative_prompt,
        sanitizer_removals=rendered.removals,
        prompt_warnings=rendered.warnings,
        seed=slot.seed(ctx.brand.name),
        model_id=ctx.model_id,
        adapters=ctx.adapters_json[slot.template],
        width=res.width,
        height=res.height,
        steps=res.steps,
        guidance=res.guidance,
        scheduler=res.scheduler,
        hires=dict(res.output or {}),  # {}: the native size, no second pass
        state=ShotState.planned.value,
    )


def _product_ids(session: Session, brand_id: int) -> list[int]:
    """Every product of the brand with a current revision, in sku order."""
    return list(
        session.scalars(
            select(Product.id)
            .where(Product.brand_id == brand_id, Product.current_revision_id.is_not(None))
            .order_by(Product.sku)
        )
    )


def _revision_rows(session: Session, product_ids: Sequence[int]) -> list[RevisionRow]:
    # Plain columns, not entities: a large catalog must not pile up in the identity map.
    rows = session.execute(
        select(Product.sku, ProductRevision.id, ProductRevision.revision, ProductRevision.data)
        .join(ProductRevision, ProductRevision.id == Product.current_revision_id)
        .where(Product.id.in_(product_ids))
        .order_by(Product.sku)
    ).all()
    return [
        RevisionRow(sku, rev_id, revision, data if isinstance(data, Mapping) else {})
        for sku, rev_id, revision, data in rows
    ]


def _slots(ctx: PlanContext, rows: Sequence[RevisionRow]) -> Iterator[ShotSlot]:
    """Plan order: product (sku order), then template, then visual variant, then candidate
    (a template's ``candidates: N`` makes N shots per slot, each with its own seed)."""
    for row in rows:
        variants = visual_variants(row.data, ctx.brand.visual_options)
        for tname in ctx.templates:
            for vv in variants:
                for candidate in range(ctx.resolved[tname].candidates):
                    yield ShotSlot(row=row, variant=vv, template=tname, candidate=candidate)


def _render(ctx: PlanContext, slot: ShotSlot, summary: PlanSummary) -> RenderedPrompt | None:
    """The slot's prompt, its warnings noted; None (counted as skipped) if it cannot render."""
    adapters = ctx.resolved[slot.template].adapters
    try:
        rendered = ctx.renderer.render(slot.template, slot.row.data, slot.variant.options, adapters)
    except RenderError as exc:
        summary.skipped += 1
        summary.warnings.append(f"{slot.where}: skipped: {exc}")
        return None
    summary.warnings.extend(f"{slot.where}: {w}" for w in rendered.warnings)
    return rendered


def _plan_rows(
    session: Session,
    ctx: PlanContext,
    rows: Sequence[RevisionRow],
    summary: PlanSummary,
    stale: dict[str, int],
) -> tuple[list[PlanEntry], list[PendingShot]]:
    """Each slot of ``rows`` in plan order, either an existing shot or a shot to insert."""
    existing = _existing(session, [r.revision_id for r in rows])
    entries: list[PlanEntry] = []
    pending: list[PendingShot] = []
    packshots = PackshotSlots.for_chunk(
        session,
        ctx.templates,
        ctx.resolved,
        rows,
        getattr(ctx.brand, "inpaint_model", None),
        controlnet=ctx.controlnet,
    )
    for slot in _slots(ctx, rows):
        found = existing.get(slot.key)
        if found is not None:
            shot_id, old_digest = found
            entries.append(ExistingEntry(shot_id))
            if old_digest != ctx.digests[slot.template]:
                stale[slot.template] = stale.get(slot.template, 0) + 1
            continue
        source = packshots.values(slot.template, slot.row, slot.variant)
        if isinstance(source, str):  # a packshot template, and no usable image
            summary.skipped += 1
            summary.warnings.append(f"{slot.where}: skipped: {source}")
            continue
        rendered = _render(ctx, slot, summary)
        if rendered is not None:
            entries.append(PendingEntry(len(pending)))
            pending.append(PendingShot(slot, {**shot_row(ctx, slot, rendered), **source}))
    return entries, pending


def _record(
    summary: PlanSummary, entries: Sequence[PlanEntry], inserted: Sequence[tuple[int, bool]]
) -> None:
    """Count the chunk's shots and list them in plan order."""
    for entry in entries:
        if isinstance(entry, ExistingEntry):
            shot_id, created = entry.shot_id, False
        else:
            shot_id, created = inserted[entry.index]
        if created:
            summary.created += 1
        else:
            summary.existing += 1
        summary.shots.append(shot_id)


def _stale_warnings(stale: Mapping[str, int]) -> list[str]:
    return [
        f"template {tname} changed since {n} existing shot(s) were planned; they keep the "
        "definition they were planned with (new product revisions use the current one)"
        for tname, n in sorted(stale.items())
    ]


def plan_shots(
    session: Session,
    brand: BrandConfig,
    settings: Settings,
    templates: list[str] | None = None,
    *,
    renderer: PromptRenderer | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PlanSummary:
    """Plan the missing shots of every current product revision of ``brand``.

    ``progress(done, total)`` is called after each chunk of products.
    """
    ctx = plan_context(session, brand, settings, templates, renderer)
    summary = PlanSummary(brand=brand.name, templates=list(ctx.templates))
    summary.warnings.extend(f"brand {brand.name}: {w}" for w in brand_warnings(brand))
    stale: dict[str, int] = {}  # template -> existing shots planned with an older definition
    product_ids = _product_ids(session, ctx.brand_id)
    for chunk in _chunks(product_ids, _CHUNK):
        rows = _revision_rows(session, chunk)
        summary.products += len(rows)
        entries, pending = _plan_rows(session, ctx, rows, summary, stale)
        _record(summary, entries, _insert(session, pending))
        if progress is not None:
            progress(summary.products, len(product_ids))
    summary.warnings.extend(_stale_warnings(stale))
    return summary


def describe_shots(session: Session, ids: Sequence[int]) -> list[dict[str, Any]]:
    """What ``shotline plan`` shows for each shot, in the order of ``ids``."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(list(ids), _CHUNK):
        rows = session.execute(
            select(Shot, Product.sku, ProductRevision.revision)
            .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
            .join(Product, Product.id == ProductRevision.product_id)
            .where(Shot.id.in_(chunk))
        ).all()
        for shot, sku, revision in rows:
            variant = shot.variant if isinstance(shot.variant, Mapping) else {}
            out[shot.id] = {
                "id": shot.id,
                "product": sku,
                "revision": revision,
                "variant_key": shot.variant_key,
                "variant": variant.get("options") or {},
                "skus": variant.get("skus") or [],
                "template": shot.template_name,
                "template_digest": shot.template_digest,
                "state": shot.state,
                "seed": shot.seed,
                "model_id": shot.model_id,
                "prompt": shot.prompt,
                "negative_prompt": shot.negative_prompt,
                "width": shot.width,
                "height": shot.height,
                "steps": shot.steps,
                "guidance": shot.guidance,
                "scheduler": shot.scheduler,
                "adapters": shot.adapters,
                "sanitizer_removals": shot.sanitizer_removals,
                "prompt_warnings": shot.prompt_warnings,
            }
    return [out[i] for i in ids if i in out]
