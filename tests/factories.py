"""Row factories for tests: the lineage chain inserted directly with the ORM.

Each ``make_*`` adds one row (flushing so ids exist) and fills every NOT NULL column with
a plausible value; keyword arguments override columns. Names get a random suffix so tests
sharing a database (the session-scoped Postgres one) never collide.

``make_gated_shot`` builds a whole chain (brand -> import run -> product revision -> shot ->
generation -> filter result [-> watermark] [-> review events] [-> asset]) in one call, and
stores real image bytes when given a blob store (anything with ``put(key, data, ...)``).
"""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from catalog.models import (
    Asset,
    Brand,
    FilterResult,
    Generation,
    ImportRun,
    Product,
    ProductRevision,
    ReviewEvent,
    Shot,
    ShotState,
    Watermark,
)
from pipeline.storage import content_key

TINY = {"width": 64, "height": 64, "steps": 4, "guidance": 5.0, "scheduler": "euler"}


def suffix() -> str:
    return uuid.uuid4().hex[:8]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def noise_png(seed: int = 0, size: int = 64) -> bytes:
    """A deterministic RGB noise PNG (what the tiny preset makes, minus the model)."""
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _put(store: Any, key: str, data: bytes, content_type: str) -> Any:
    return store.put(key, data, content_type=content_type) if store is not None else None


# The names test brands let approve (review tests use them as free names).
REVIEWERS = ("alice", "bob", "carol", "-mallory", "@mallory", "bench", "env-reviewer")


def make_brand(session: Session, name: str | None = None, **kw: Any) -> Brand:
    name = name or f"brand-{suffix()}"
    config = kw.pop("config", {"name": name, "base_model": "tiny", "reviewers": list(REVIEWERS)})
    digest = kw.pop("config_digest", sha256_hex(repr(sorted(config.items())).encode()))
    brand = Brand(name=name, config_digest=digest, version=1, config=config, **kw)
    session.add(brand)
    session.flush()
    return brand


def make_import_run(session: Session, brand: Brand, **kw: Any) -> ImportRun:
    values: dict[str, Any] = {
        "source_uri": f"file:///data/{brand.name}-catalog.csv",
        "file_sha256": sha256_hex(f"csv-{suffix()}".encode()),
        "format": "shopify",
        "encoding": "utf-8",
        "status": "succeeded",
        "rows_total": 3,
    }
    values.update(kw)
    run = ImportRun(brand_id=brand.id, **values)
    session.add(run)
    session.flush()
    return run


def make_product(
    session: Session,
    brand: Brand,
    sku: str | None = None,
    *,
    import_run: ImportRun | None = None,
    title: str = "Linen Cushion",
    line: int = 2,
    variants: list[dict[str, Any]] | None = None,
    **data: Any,
) -> ProductRevision:
    """A product and its first revision (made current). Variants default to one per line."""
    sku = sku or f"SKU-{suffix()}"
    if variants is None:
        variants = [
            {"sku": f"{sku}-RED", "options": {"Color": "Red"}, "price": "19.00", "line": line},
            {"sku": f"{sku}-BLU", "options": {"Color": "Blue"}, "price": "19.00", "line": line + 1},
        ]
    payload = {
        "key": sku,
        "title": title,
        "body_html": "",
        "vendor": brand.name,
        "product_type": "Cushion",
        "tags": [],
        "options": ["Color"],
        "images": [],
        "variants": variants,
        "extra": {},
        **data,
    }
    product = Product(brand_id=brand.id, sku=sku)
    session.add(product)
    session.flush()
    rev = ProductRevision(
        product_id=product.id,
        revision=1,
        content_hash=sha256_hex(repr(payload).encode()),
        data=payload,
        import_run_id=import_run.id if import_run is not None else None,
        source_line=line,
    )
    session.add(rev)
    session.flush()
    product.current_revision_id = rev.id
    session.flush()
    return rev


def make_shot(
    session: Session,
    revision: ProductRevision,
    *,
    template: str = "hero_white",
    state: str = ShotState.planned.value,
    variant: dict[str, Any] | None = None,
    **kw: Any,
) -> Shot:
    product = session.get(Product, revision.product_id)
    assert product is not None
    brand = session.get(Brand, product.brand_id)
    assert brand is not None
    if variant is None:
        first = (revision.data.get("variants") or [{}])[0]
        variant = {"sku": first.get("sku"), "options": dict(first.get("options") or {})}
    values: dict[str, Any] = {
        **TINY,
        "variant_key": "|".join(f"{k}={v}" for k, v in sorted(variant.get("options", {}).items())),
        "brand_config_digest": brand.config_digest,
        "template_digest": sha256_hex(template.encode()),
        "prompt": f"studio product photo of {revision.data.get('title')}, white background",
        "negative_prompt": "blurry, text, watermark, logo",
        "sanitizer_removals": [],
        "prompt_warnings": [],
        "seed": int(uuid.uuid4().int % 2**31),
        "model_id": "tiny",
        "adapters": [],
    }
    values.update(kw)
    shot = Shot(
        brand_id=brand.id,
        product_revision_id=revision.id,
        variant=variant,
        template_name=template,
        state=state,
        **values,
    )
    session.add(shot)
    session.flush()
    return shot


def _names(session: Session, shot: Shot) -> tuple[str, str]:
    brand = session.get(Brand, shot.brand_id)
    assert brand is not None
    sku = (shot.variant or {}).get("sku") or shot.product_revision.product.sku
    return brand.name, str(sku)


def make_generation(
    session: Session, shot: Shot, png: bytes | None = None, store: Any = None, **kw: Any
) -> Generation:
    png = png if png is not None else noise_png(shot.id)
    sha = sha256_hex(png)
    brand, sku = _names(session, shot)
    key = kw.pop("blob_key", None) or content_key(
        "raw", brand, sku, shot.template_name, sha256=sha, ext="png"
    )
    _put(store, key, png, "image/png")
    values: dict[str, Any] = {
        "blob_backend": getattr(store, "backend", "local"),
        "blob_key": key,
        "sha256": sha,
        "size_bytes": len(png),
        "model_digest": shot.model_digest or "0" * 64,
        "timings": {"total_s": 0.1},
        "device": "cpu",
        "library_versions": {"torch": "test"},
        "batch_id": suffix(),
    }
    values.update(kw)
    gen = Generation(shot_id=shot.id, **values)
    session.add(gen)
    session.flush()
    return gen


def make_filter_result(
    session: Session,
    shot: Shot,
    decision: str = ShotState.pending_review.value,
    *,
    scores: list[dict[str, Any]] | None = None,
    reasons: list[str] | None = None,
    **kw: Any,
) -> FilterResult:
    rejected = decision == ShotState.rejected.value
    if scores is None:
        scores = [
            {"name": "nsfw", "kind": "safety", "score": 0.05, "threshold": 0.3, "triggered": False},
            {
                "name": "Nike",
                "kind": "competitor",
                "score": 0.41 if rejected else 0.12,
                "threshold": 0.3,
                "triggered": rejected,
            },
            {
                "name": "product_match",
                "kind": "product_match",
                "score": 0.22,
                "threshold": 0.15,
                "triggered": False,
            },
        ]
    if reasons is None:
        reasons = ["competitor:Nike"] if rejected else []
    values: dict[str, Any] = {"policy_version": "1", "clip_model": "tiny"}
    values.update(kw)
    fr = FilterResult(shot_id=shot.id, scores=scores, decision=decision, reasons=reasons, **values)
    session.add(fr)
    session.flush()
    return fr


def make_watermark(
    session: Session, shot: Shot, data: bytes | None = None, store: Any = None, **kw: Any
) -> Watermark:
    """The gated final file's row; ``data`` defaults to the noise PNG (not watermarked)."""
    data = data if data is not None else noise_png(shot.id + 10_000)
    sha = sha256_hex(data)
    ext = kw.pop("ext", "png")
    content_type = kw.pop("content_type", f"image/{ext}")
    brand, sku = _names(session, shot)
    key = kw.pop("image_key", None) or content_key(
        "final", brand, sku, shot.template_name, sha256=sha, ext=ext
    )
    _put(store, key, data, content_type)
    values: dict[str, Any] = {
        "method": "dwtDct",
        "payload": f"{shot.id:016x}",
        "verified": True,
        "bit_accuracy": 1.0,
        "image_backend": getattr(store, "backend", "local"),
        "image_key": key,
        "image_sha256": sha,
        "image_size": len(data),
        "content_type": content_type,
        "c2pa_signed": False,
    }
    values.update(kw)
    wm = Watermark(shot_id=shot.id, **values)
    session.add(wm)
    session.flush()
    return wm


def make_review_event(
    session: Session,
    shot: Shot,
    action: str = "approve",
    reviewer: str = "alice",
    note: str | None = None,
) -> ReviewEvent:
    event = ReviewEvent(shot_id=shot.id, reviewer=reviewer, action=action, note=note)
    session.add(event)
    session.flush()
    return event


def make_asset(session: Session, shot: Shot, store: Any = None, **kw: Any) -> Asset:
    """The published asset; copies the final file when ``store`` is given."""
    wm = shot.watermark or session.query(Watermark).filter_by(shot_id=shot.id).one_or_none()
    sha = kw.pop("sha256", None) or (
        wm.image_sha256 if wm else sha256_hex(f"asset-{shot.id}".encode())
    )
    brand, sku = _names(session, shot)
    key = kw.pop("key", None) or content_key(brand, sku, shot.template_name, sha256=sha, ext="png")
    info = None
    if store is not None and wm is not None:
        info = store.put(key, store.get(wm.image_key), content_type=wm.content_type)
    values: dict[str, Any] = {
        "backend": getattr(store, "backend", "local"),
        "bucket": getattr(info, "bucket", None),
        "sha256": sha,
        "size_bytes": wm.image_size if wm else 1,
        "etag": getattr(info, "etag", None) or f'"{sha[:32]}"',
        "content_type": wm.content_type if wm else "image/png",
    }
    values.update(kw)
    asset = Asset(shot_id=shot.id, key=key, **values)
    session.add(asset)
    session.flush()
    return asset


def make_gated_shot(
    session: Session,
    *,
    brand: Brand | None = None,
    import_run: ImportRun | None = None,
    sku: str | None = None,
    title: str = "Linen Cushion",
    template: str = "hero_white",
    decision: str = ShotState.pending_review.value,
    state: str | None = None,
    raw: bytes | None = None,
    final: bytes | None = None,
    store: Any = None,
    reviews: list[tuple[str, str, str | None]] | None = None,
    published: bool = False,
    **shot_kw: Any,
) -> Shot:
    """A shot that went through generation and the gate (``decision``).

    ``reviews`` is ``[(action, reviewer, note)]``; ``published`` adds an asset (the state
    becomes ``published``). A kept image (pending_review) always gets its watermark row.
    """
    brand = brand or make_brand(session)
    if import_run is None:
        import_run = make_import_run(session, brand)
    rev = make_product(session, brand, sku, import_run=import_run, title=title)
    final_state = state or (ShotState.published.value if published else decision)
    shot = make_shot(session, rev, template=template, state=final_state, **shot_kw)
    make_generation(session, shot, raw, store)
    make_filter_result(session, shot, decision)
    if decision == ShotState.pending_review.value or final is not None:
        make_watermark(session, shot, final, store)
    for action, reviewer, note in reviews or []:
        make_review_event(session, shot, action, reviewer, note)
    if published:
        make_asset(session, shot, store)
    session.refresh(shot)
    return shot
