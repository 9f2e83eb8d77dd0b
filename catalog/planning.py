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
from pipeline.brand.config import BrandConfig, ResolvedTemplate
from pipeline.brand.loader import brand_warnings
from pipeline.brand.seeds import derive_seed
from pipeline.brand.templates import PromptRenderer, RenderError
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


def _insert(
    session: Session, pending: list[tuple[tuple[int, str, str], dict[str, Any]]]
) -> list[tuple[int, bool]]:
    """Insert shots; returns (id, created) per row. A concurrent planner's rows are adopted."""
    if not pending:
        return []
    try:
        with session.begin_nested():
            shots = [Shot(**kw) for _, kw in pending]
            session.add_all(shots)
            session.flush()
        ids = [(s.id, True) for s in shots]
        for shot in shots:  # written; callers load shots by id when they need them
            session.expunge(shot)
        return ids
    except IntegrityError:
        pass
    # Someone planned some of these since we looked: go one by one under the constraint.
    out = []
    for (rev_id, vkey, tname), kw in pending:
        try:
            with session.begin_nested():
                shot = Shot(**kw)
                session.add(shot)
                session.flush()
            out.append((shot.id, True))
        except IntegrityError:
            existing = session.scalar(
                select(Shot.id).where(
                    Shot.product_revision_id == rev_id,
                    Shot.variant_key == vkey,
                    Shot.template_name == tname,
                )
            )
            if existing is None:
                raise
            out.append((existing, False))
    return out


def _existing(
    session: Session, revision_ids: Sequence[int]
) -> dict[tuple[int, str, str], tuple[int, str]]:
    rows = session.execute(
        select(
            Shot.id,
            Shot.product_revision_id,
            Shot.variant_key,
            Shot.template_name,
            Shot.template_digest,
        ).where(Shot.product_revision_id.in_(revision_ids))
    ).all()
    return {
        (r.product_revision_id, r.variant_key, r.template_name): (r.id, r.template_digest)
        for r in rows
    }


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
    names = list(dict.fromkeys(templates)) if templates else list(brand.templates)
    unknown = [t for t in names if t not in brand.templates]
    if unknown:
        raise PlanningError(
            f"brand {brand.name!r} has no template {', '.join(repr(t) for t in unknown)} "
            f"(known: {', '.join(sorted(brand.templates))})"
        )
    brand_row = upsert_brand(session, brand)
    upsert_adapters(session, brand)
    resolved: dict[str, ResolvedTemplate] = {n: brand.resolve_template(n) for n in names}
    digests = {n: r.digest() for n, r in resolved.items()}
    adapters_json = {n: [a.to_json() for a in r.adapters] for n, r in resolved.items()}
    renderer = renderer or PromptRenderer(brand, templates=names)
    model_id = settings.model or brand.resolved_base_model()

    summary = PlanSummary(brand=brand.name, templates=names)
    summary.warnings.extend(f"brand {brand.name}: {w}" for w in brand_warnings(brand))
    stale: dict[str, int] = {}

    product_ids = list(
        session.scalars(
            select(Product.id)
            .where(Product.brand_id == brand_row.id, Product.current_revision_id.is_not(None))
            .order_by(Product.sku)
        )
    )
    for chunk in _chunks(product_ids, _CHUNK):
        # Plain columns, not entities: a large catalog must not pile up in the identity map.
        rows = session.execute(
            select(Product.sku, ProductRevision.id, ProductRevision.revision, ProductRevision.data)
            .join(ProductRevision, ProductRevision.id == Product.current_revision_id)
            .where(Product.id.in_(chunk))
            .order_by(Product.sku)
        ).all()
        existing = _existing(session, [rev_id for _, rev_id, _, _ in rows])
        # Plan order, each slot either an existing shot id or an index into ``pending``.
        slots: list[int | tuple[int]] = []
        pending: list[tuple[tuple[int, str, str], dict[str, Any]]] = []
        for sku, rev_id, revision, rev_data in rows:
            summary.products += 1
            data = rev_data if isinstance(rev_data, Mapping) else {}
            product_key = str(data.get("key") or sku)
            variants = visual_variants(data, brand.visual_options)
            for tname in names:
                res = resolved[tname]
                for vv in variants:
                    k = (rev_id, vv.key, tname)
                    if k in existing:
                        shot_id, old_digest = existing[k]
                        slots.append(shot_id)
                        if old_digest != digests[tname]:
                            stale[tname] = stale.get(tname, 0) + 1
                        continue
                    where = f"{product_key} [{vv.label}] {tname}"
                    try:
                        rendered = renderer.render(tname, data, vv.options, res.adapters)
                    except RenderError as exc:
                        summary.skipped += 1
                        summary.warnings.append(f"{where}: skipped: {exc}")
                        continue
                    summary.warnings.extend(f"{where}: {w}" for w in rendered.warnings)
                    slots.append((len(pending),))
                    pending.append(
                        (
                            k,
                            dict(
                                brand_id=brand_row.id,
                                product_revision_id=rev_id,
                                variant_key=vv.key,
                                variant=vv.to_json(),
                                brand_config_digest=brand_row.config_digest,
                                template_name=tname,
                                template_digest=digests[tname],
                                prompt=rendered.prompt,
                                negative_prompt=rendered.negative_prompt,
                                sanitizer_removals=rendered.removals,
                                prompt_warnings=rendered.warnings,
                                seed=derive_seed(brand.name, product_key, vv.key, tname, revision),
                                model_id=model_id,
                                adapters=adapters_json[tname],
                                width=res.width,
                                height=res.height,
                                steps=res.steps,
                                guidance=res.guidance,
                                scheduler=res.scheduler,
                                state=ShotState.planned.value,
                            ),
                        )
                    )
        inserted = _insert(session, pending)
        for slot in slots:
            if isinstance(slot, tuple):
                shot_id, created = inserted[slot[0]]
                if created:
                    summary.created += 1
                else:
                    summary.existing += 1
                summary.shots.append(shot_id)
            else:
                summary.existing += 1
                summary.shots.append(slot)
        if progress is not None:
            progress(summary.products, len(product_ids))
    for tname, n in sorted(stale.items()):
        summary.warnings.append(
            f"template {tname} changed since {n} existing shot(s) were planned; they keep the "
            "definition they were planned with (new product revisions use the current one)"
        )
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
