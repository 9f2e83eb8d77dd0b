"""Lineage queries: from any published image back to its CSV line, and the reverse.

``lineage_for(session, ref)`` resolves REF with this rule (first match wins):

1. ``asset:ID`` -> that asset's shot; ``shot:ID`` -> that shot; ``sku:SKU`` -> that sku;
2. ``s3://bucket/key``, a public ``https://`` URL (``SHOTLINE_PUBLIC_BASE_URL`` + key,
   percent-decoded) or any text containing ``/`` -> a blob key: a published asset key, a
   channel rendition's key, a gated (final) image key or a raw generation key. A key with
   extra leading parts (the S3 prefix, the URL's base path) is matched by dropping leading
   parts one at a time;
3. anything else -> a sku: the product key (Shopify handle, GMC item group...) or a variant
   sku; every shot of it, in every brand.

A bare number is a sku, because skus are often numeric; write ``shot:7`` or ``asset:7``.
The answer is ``{"ref", "matched", "chains": [chain, ...]}``; each chain is a JSON-able
dict (see ``shot_chain``). Unknown refs raise ``LineageError`` naming the ref.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import String, cast, func, select, text
from sqlalchemy.orm import Session, selectinload

from catalog.db import MAX_ROW_ID
from catalog.delivery.lineage import delivery_json
from catalog.embeddings import EmbeddingError, nearest_assets
from catalog.models import (
    Asset,
    AssetRendition,
    Brand,
    FilterResult,
    Generation,
    ImportRun,
    Product,
    ProductRevision,
    Shot,
    Watermark,
)
from catalog.packshots.source_lineage import packshot_json
from catalog.review import current_review_state, event_json, shot_sku
from catalog.shots import id_chunks, lineage_loads
from catalog.training import get_training, trainings_for_pins
from pipeline.types import WATERMARK_OMITTED_WHITE


class LineageError(LookupError):
    """A lineage reference that names nothing we know."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _shot_query() -> Any:
    return select(Shot).options(*lineage_loads())


def _variant_lines(shot: Shot, data: Mapping[str, Any]) -> list[int]:
    """The CSV lines of the catalog variants this shot depicts (empty if unknown)."""
    variant = shot.variant if isinstance(shot.variant, Mapping) else {}
    if isinstance(variant.get("lines"), list):
        return [int(x) for x in variant["lines"] if isinstance(x, int)]
    if isinstance(variant.get("line"), int):
        return [int(variant["line"])]
    variants = [v for v in data.get("variants") or [] if isinstance(v, Mapping)]
    if variant.get("sku"):
        lines = [
            int(v["line"])
            for v in variants
            if v.get("sku") == variant["sku"] and isinstance(v.get("line"), int)
        ]
        if lines:
            return lines
    options = variant.get("options")
    if not isinstance(options, Mapping):
        options = {k: v for k, v in variant.items() if isinstance(v, str) and k != "sku"}
    lines = []
    for v in variants:
        if not isinstance(v.get("line"), int):
            continue
        raw_opts = v.get("options")
        v_opts: Mapping[str, Any] = raw_opts if isinstance(raw_opts, Mapping) else {}
        if all(v_opts.get(k) == val for k, val in options.items()):
            lines.append(int(v["line"]))
    return lines


def _source(session: Session, rev: ProductRevision, shot: Shot) -> dict[str, Any] | None:
    data = rev.data if isinstance(rev.data, Mapping) else {}
    lines = _variant_lines(shot, data)
    run = session.get(ImportRun, rev.import_run_id) if rev.import_run_id is not None else None
    if run is None and rev.source_line is None:
        return None
    return {
        "import_run_id": rev.import_run_id,
        "uri": run.source_uri if run else None,
        "sha256": run.file_sha256 if run else None,
        "format": run.format if run else None,
        "line": lines[0] if lines else rev.source_line,
        "product_line": rev.source_line,
        "variant_lines": lines,
        "imported_at": _iso(run.started_at) if run else None,
    }


def shot_chain(session: Session, shot: Shot) -> dict[str, Any]:
    """The full chain for one shot, CSV line first, published asset last."""
    rev = shot.product_revision
    brand = session.get(Brand, shot.brand_id)
    gen, fr, wm, asset = shot.generation, shot.filter_result, shot.watermark, shot.asset
    return {
        "shot_id": shot.id,
        "state": shot.state,
        "brand": brand.name if brand else None,
        "sku": shot_sku(shot),
        "product_key": rev.product.sku,
        "variant": shot.variant,
        "csv": _source(session, rev, shot),
        "product_revision": _revision_json(rev),
        "brand_config": _brand_config_json(shot, brand),
        "template": {"name": shot.template_name, "digest": shot.template_digest},
        "packshot": packshot_json(session, shot),
        "prompt": _prompt_json(shot),
        "model": {
            "id": shot.model_id,
            # The generator fills the shot's digest; the generation row keeps what ran.
            "digest": (gen.model_digest if gen and gen.model_digest else shot.model_digest),
        },
        "loras": _with_trainings(session, _loras_json(shot)),
        "sampling": _sampling_json(shot),
        "generation": None if gen is None else _generation_json(gen),
        "filter": None if fr is None else _filter_json(fr),
        "watermark": None if wm is None else _watermark_json(wm),
        "review": {
            "state": current_review_state(shot.review_events),
            "events": [event_json(e) for e in shot.review_events],
        },
        "asset": None if asset is None else _asset_json(asset),
        "delivery": delivery_json(session, asset),  # renditions, current/superseded/recalled
    }


def _revision_json(rev: ProductRevision) -> dict[str, Any]:
    data = rev.data if isinstance(rev.data, Mapping) else {}
    return {
        "id": rev.id,
        "revision": rev.revision,
        "content_hash": rev.content_hash,
        "title": data.get("title"),
    }


def _brand_config_json(shot: Shot, brand: Brand | None) -> dict[str, Any]:
    """The brand config the shot was planned with, against the brand's current one."""
    return {
        "digest": shot.brand_config_digest,
        "current_digest": brand.config_digest if brand else None,
        "current_version": brand.version if brand else None,
        "is_current": bool(brand and brand.config_digest == shot.brand_config_digest),
    }


def _prompt_json(shot: Shot) -> dict[str, Any]:
    return {
        "text": shot.prompt,
        "negative": shot.negative_prompt,
        "sanitizer_removals": list(shot.sanitizer_removals or []),
        "warnings": list(shot.prompt_warnings or []),
    }


def _loras_json(shot: Shot) -> list[dict[str, Any]]:
    return [
        {k: a.get(k) for k in ("name", "sha256", "weight", "uri")}
        for a in shot.adapters or []
        if isinstance(a, Mapping)
    ]


def _with_trainings(session: Session, loras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each adapter with the training run that made it (down to its dataset digest)."""
    runs = trainings_for_pins(session, [str(a.get("sha256") or "") for a in loras])
    for item in loras:
        run = runs.get(str(item.get("sha256") or "").lower())
        if run is not None:  # adapters from elsewhere have no training run to show
            item["training"] = {
                "id": run.id,
                "dataset_digest": run.dataset_digest,
                "base_model": run.base_model,
                "base_model_digest": run.base_model_digest,
                "steps": run.steps_done,
            }
    return loras


def _sampling_json(shot: Shot) -> dict[str, Any]:
    return {
        "seed": shot.seed,
        "steps": shot.steps,
        "guidance": shot.guidance,
        "scheduler": shot.scheduler,
        "width": shot.width,
        "height": shot.height,
        # The output size and the second pass that reached it; absent: native, one pass.
        **({"hires": dict(shot.hires)} if shot.hires else {}),
    }


def _generation_json(gen: Generation) -> dict[str, Any]:
    return {
        "raw_sha256": gen.sha256,
        "raw_key": gen.blob_key or None,  # "": not stored (gated on the GPU host)
        "backend": gen.blob_backend,
        "device": gen.device,
        "batch_id": gen.batch_id,
        "library_versions": gen.library_versions,
        "at": _iso(gen.created_at),
    }


def _filter_json(fr: FilterResult) -> dict[str, Any]:
    return {
        "decision": fr.decision,
        "reasons": list(fr.reasons or []),
        "scores": list(fr.scores or []),
        "policy_version": fr.policy_version,
        "clip_model": fr.clip_model,
    }


def _watermark_json(wm: Watermark) -> dict[str, Any]:
    note = None
    if wm.method == WATERMARK_OMITTED_WHITE:
        note = "omitted (white_background slot: the product is too small to carry the mark)"
    return {
        "note": note,
        "method": wm.method,
        "payload": wm.payload,
        "verified": wm.verified,
        "bit_accuracy": wm.bit_accuracy,
        "image_key": wm.image_key,
        "image_sha256": wm.image_sha256,
        "c2pa_signed": wm.c2pa_signed,
    }


def _asset_json(asset: Asset) -> dict[str, Any]:
    return {
        "id": asset.id,
        "backend": asset.backend,
        "bucket": asset.bucket,
        "key": asset.key,
        "sha256": asset.sha256,
        "size": asset.size_bytes,
        "etag": asset.etag,
        "content_type": asset.content_type,
        "published_at": _iso(asset.published_at),
    }


def shot_lineage(session: Session, shot_id: int) -> dict[str, Any] | None:
    """The chain of one shot, or None if there is no such shot (``verify`` uses this)."""
    shot = session.scalar(_shot_query().where(Shot.id == shot_id))
    return shot_chain(session, shot) if shot is not None else None


def _int_ref(ref: str, kind: str) -> int:
    # ASCII digits only: int() also takes "١٢", " 12", "+1" and "1_000", and "²" passes
    # str.isdigit() but makes int() raise.
    if not (ref.isascii() and ref.isdigit()):
        raise LineageError(f"{kind}:{ref}: not a number")
    value = int(ref)
    if not 1 <= value <= MAX_ROW_ID:
        raise LineageError(f"{kind}:{ref}: ids run from 1 to {MAX_ROW_ID}")
    return value


def _shots_for_key(session: Session, key: str) -> list[int]:
    if not key:  # "" is what a raw that was never stored records: it names no file
        return []
    for column, id_col in (
        (Asset.key, Asset.shot_id),
        (AssetRendition.key, AssetRendition.shot_id),
        (Watermark.image_key, Watermark.shot_id),
        (Generation.blob_key, Generation.shot_id),
    ):
        ids = list(session.scalars(select(id_col).where(column == key)).all())
        if ids:
            return ids
    return []


def _resolve(session: Session, ref: str) -> tuple[str, list[int]]:
    ref = ref.strip()
    kind, _, rest = ref.partition(":")
    if kind == "asset" and rest:
        shot_id = session.scalar(select(Asset.shot_id).where(Asset.id == _int_ref(rest, kind)))
        if shot_id is None:
            raise LineageError(f"{ref}: no such asset")
        return "asset", [shot_id]
    if kind == "shot" and rest:
        shot_id = session.scalar(select(Shot.id).where(Shot.id == _int_ref(rest, kind)))
        if shot_id is None:
            raise LineageError(f"{ref}: no such shot")
        return "shot", [shot_id]
    if kind == "sku" and rest:
        return "sku", _shots_for_sku(session, ref, rest)
    if "/" in ref:
        key = ref
        if key.startswith("s3://"):
            key = key[len("s3://") :].partition("/")[2]
        elif key.startswith(("https://", "http://")):
            # A feed's URL: the key is its path, percent-encoded (RFC 3986) by public_url.
            key = unquote(urlsplit(key).path)
        parts = key.strip("/").split("/")
        # Drop leading parts (a bucket, the S3 prefix) until a stored key matches.
        for i in range(len(parts)):
            ids = _shots_for_key(session, "/".join(parts[i:]))
            if ids:
                return "key", ids
        raise LineageError(f"{ref}: no asset, final image or raw image has this key")
    return "sku", _shots_for_sku(session, ref, ref)


def _shots_for_sku(session: Session, ref: str, sku: str) -> list[int]:
    """Shots of the product with this key, or of the variant with this sku."""
    ids = set(
        session.scalars(
            select(Shot.id)
            .join(ProductRevision, Shot.product_revision_id == ProductRevision.id)
            .join(Product, ProductRevision.product_id == Product.id)
            .where(Product.sku == sku)
        ).all()
    )
    # Variant skus live in the shots' JSON: matched as JSON values (the variant's ``sku``, or
    # one of its visual variant's ``skus``), never a LIKE over every shot's JSON cast to text.
    ids.update(session.scalars(select(Shot.id).where(_variant_has_sku(session, sku))))
    if not ids:
        hint = (
            " (a bare number is a sku: write shot:N or asset:N)"
            if sku.isascii() and sku.isdigit()
            else ""
        )
        raise LineageError(f"{ref}: no shots for this sku{hint}")
    return sorted(ids)


def _variant_has_sku(session: Session, sku: str) -> Any:
    """``shots.variant`` names ``sku``: its own ``sku`` or one of its ``skus``."""
    if session.get_bind().dialect.name == "postgresql":
        return text(
            "(shots.variant ->> 'sku') = :sku OR (shots.variant -> 'skus') @> CAST(:skus AS jsonb)"
        ).bindparams(sku=sku, skus=json.dumps([sku]))
    return text(
        "json_extract(shots.variant, '$.sku') = :sku OR EXISTS "
        "(SELECT 1 FROM json_each(shots.variant, '$.skus') WHERE json_each.value = :sku)"
    ).bindparams(sku=sku)


def lineage_for(session: Session, ref: str) -> dict[str, Any]:
    """Resolve REF (see the module docstring) and return every matching shot's chain."""
    if not ref or not ref.strip():
        raise LineageError("empty lineage reference")
    matched, ids = _resolve(session, ref)
    chains = [
        shot_chain(session, shot)
        for part in id_chunks(sorted(ids))
        for shot in session.scalars(_shot_query().where(Shot.id.in_(part)).order_by(Shot.id))
    ]
    return {"ref": ref, "matched": matched, "chains": chains}


# --- reverse queries ---------------------------------------------------------------------


def parse_lora_ref(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@SHA256`` (a sha256 prefix of 8+ hex digits is enough)."""
    name, _, sha = text.partition("@")
    name, sha = name.strip(), sha.strip().lower()
    if not name:
        raise LineageError(f"{text!r}: expected NAME or NAME@SHA256")
    if sha and (len(sha) < 8 or any(c not in "0123456789abcdef" for c in sha)):
        raise LineageError(f"{text!r}: the sha256 must be 8 to 64 hex digits")
    return name, sha or None


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def assets_by_lora(session: Session, name: str, sha256: str | None = None) -> list[dict[str, Any]]:
    """Every published asset whose shot used LoRA ``name`` (pinned to ``sha256`` if given).

    The JSON text pre-filter keeps the scan cheap on both SQLite and Postgres; the exact
    match on name/sha256 happens here, on the decoded adapters.
    """
    query = (
        select(Asset, Shot)
        .join(Shot, Asset.shot_id == Shot.id)
        .where(cast(Shot.adapters, String).like(f"%{_like_escape(name)}%", escape="\\"))
        .options(selectinload(Shot.product_revision).selectinload(ProductRevision.product))
        .order_by(Asset.id)
    )
    out = []
    for asset, shot in session.execute(query).all():
        for adapter in shot.adapters or []:
            if not isinstance(adapter, Mapping) or adapter.get("name") != name:
                continue
            pin = str(adapter.get("sha256") or "").lower()
            if sha256 is not None and not pin.startswith(sha256.lower()):
                continue
            out.append(
                {
                    "asset_id": asset.id,
                    "shot_id": shot.id,
                    "sku": shot_sku(shot),
                    "template": shot.template_name,
                    "key": asset.key,
                    "sha256": asset.sha256,
                    "etag": asset.etag,
                    "published_at": _iso(asset.published_at),
                    "lora": {"name": name, "sha256": pin, "weight": adapter.get("weight")},
                }
            )
            break
    return out


def assets_by_training(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Every published asset made with the adapter training run ``run_id`` produced."""
    run = get_training(session, run_id)
    if run.adapter_sha256 is None:
        return []
    return assets_by_lora(session, run.name, run.adapter_sha256)


STREAM_ROWS = 2000  # rows per fetch when streaming an import run's outputs


def import_run_outputs(session: Session, run_id: int) -> dict[str, Any]:
    """What an import run produced, for any catalog size: the run, its shots' states and
    the number of revisions (aggregates in SQL), with ``revisions`` and ``shots`` as
    *iterators* over plain rows read through a server-side cursor (``yield_per``). Consume
    them one after the other, inside the session; ``outputs_of_import_run`` makes lists."""
    run = session.get(ImportRun, run_id)
    if run is None:
        raise LineageError(f"import run {run_id}: no such run")
    revs = select(ProductRevision.id).where(ProductRevision.import_run_id == run_id)
    in_run = Shot.product_revision_id.in_(revs)
    states = session.execute(
        select(Shot.state, func.count()).where(in_run).group_by(Shot.state).order_by(Shot.state)
    ).all()
    n_revisions = session.scalar(select(func.count()).select_from(revs.subquery()))
    return {
        "run": {
            "id": run.id,
            "uri": run.source_uri,
            "sha256": run.file_sha256,
            "status": run.status,
            "rows_total": run.rows_total,
            "rows_error": run.rows_error,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
        },
        "revision_count": int(n_revisions or 0),
        "revisions": _run_revisions(session, run_id),
        "states": {str(state): int(n) for state, n in states},
        "shots": _run_shots(session, in_run),
    }


def _run_revisions(session: Session, run_id: int) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            ProductRevision.id, Product.sku, ProductRevision.revision, ProductRevision.source_line
        )
        .join(Product, Product.id == ProductRevision.product_id)
        .where(ProductRevision.import_run_id == run_id)
        .order_by(ProductRevision.id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for rev_id, sku, revision, line in session.execute(stmt):
        yield {"id": rev_id, "product_key": sku, "revision": revision, "line": line}


def _run_shots(session: Session, in_run: Any) -> Iterator[dict[str, Any]]:
    stmt = (
        select(
            Shot.id,
            Shot.variant,
            Product.sku,
            Shot.template_name,
            Shot.state,
            Generation.sha256,
            Asset.id,
            Asset.key,
        )
        .join(ProductRevision, ProductRevision.id == Shot.product_revision_id)
        .join(Product, Product.id == ProductRevision.product_id)
        .outerjoin(Generation, Generation.shot_id == Shot.id)
        .outerjoin(Asset, Asset.shot_id == Shot.id)
        .where(in_run)
        .order_by(Shot.id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for sid, variant, product_key, template, state, raw, asset_id, asset_key in session.execute(
        stmt
    ):
        sku = variant.get("sku") if isinstance(variant, Mapping) else None
        yield {
            "shot_id": sid,
            "sku": str(sku or product_key),
            "template": template,
            "state": state,
            "raw_sha256": raw,
            "asset_id": asset_id,
            "asset_key": asset_key,
        }


def outputs_of_import_run(session: Session, run_id: int) -> dict[str, Any]:
    """What an import run produced, as lists (see ``import_run_outputs`` to stream)."""
    out = import_run_outputs(session, run_id)
    out["revisions"] = list(out["revisions"])
    out["shots"] = list(out["shots"])
    return out


def shot_with_generation(session: Session, shot_id: int) -> Shot | None:
    """One shot with its generation record loaded (``reproduce`` compares against it)."""
    return session.scalar(
        select(Shot).where(Shot.id == shot_id).options(selectinload(Shot.generation))
    )


def batch_mates(session: Session, shot: Shot) -> list[Shot]:
    """The shots generated in the same generator call as ``shot``: its recorded batch id and
    model, in id order, itself included; [] when its generation has no batch id."""
    gen = shot.generation
    if gen is None or not gen.batch_id:
        return []
    return list(
        session.scalars(
            select(Shot)
            .join(Generation, Generation.shot_id == Shot.id)
            .where(Generation.batch_id == gen.batch_id, Shot.model_id == shot.model_id)
            .order_by(Shot.id)
        ).all()
    )


def _asset_id(session: Session, ref: str) -> int:
    """``asset:ID``, a bare id, or the asset's key (``s3://bucket/key`` too)."""
    text = ref.strip()
    if text.startswith("asset:"):
        return _int_ref(text[len("asset:") :], "asset")
    if text.isascii() and text.isdigit():
        return _int_ref(text, "asset")
    key = text.split("/", 3)[3] if text.startswith("s3://") and text.count("/") >= 3 else text
    found = session.scalar(select(Asset.id).where(Asset.key == key))
    if found is None:
        raise LineageError(f"{ref!r}: no published asset with that id or key")
    return int(found)


def assets_like(session: Session, ref: str, top: int = 10) -> dict[str, Any]:
    """The ``top`` published assets nearest to ``ref`` (same brand and CLIP model), by the
    cosine of their stored image embeddings."""
    asset_id = _asset_id(session, ref)
    try:
        hits = nearest_assets(session, asset_id, k=top)
    except EmbeddingError as exc:
        raise LineageError(str(exc)) from None
    return {
        "asset_id": asset_id,
        "neighbours": [
            {
                "asset_id": n.asset_id,
                "shot_id": n.shot_id,
                "key": n.key,
                "sku": n.sku,
                "cosine": n.cosine,
            }
            for n in hits
        ],
    }
