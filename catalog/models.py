"""The lineage schema. Alembic owns it (``migrations/``); never ``create_all``.

Every arrow of the production line is a state change on one of these rows, so any
published object traces back to its CSV line, template, model/LoRA digests, seed,
filter scores and reviewer.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}  # noqa: RUF012


class ShotState(enum.StrEnum):
    planned = "planned"
    generating = "generating"
    generated = "generated"
    rejected = "rejected"
    pending_review = "pending_review"
    approved = "approved"
    published = "published"
    failed = "failed"


TERMINAL_STATES = frozenset({ShotState.rejected, ShotState.published, ShotState.failed})


class ImportStatus(enum.StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class ReviewAction(enum.StrEnum):
    approve = "approve"
    reject = "reject"
    override = "override"


def _ts(**kw: Any) -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), default=utcnow, **kw)


class Brand(Base):
    __tablename__ = "brands"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    config_digest: Mapped[str] = mapped_column(String(64))
    # Bumped whenever the digest changes; shots keep the digest they were planned with.
    version: Mapped[int] = mapped_column(Integer, default=1)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts(onupdate=utcnow)


class ImportRun(Base):
    __tablename__ = "import_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id"), index=True)
    source_uri: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    format: Mapped[str | None] = mapped_column(String(20))
    encoding: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=ImportStatus.running.value)
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_error: Mapped[int] = mapped_column(Integer, default=0)
    products_seen: Mapped[int] = mapped_column(Integer, default=0)
    revisions_new: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Non-fatal notes (e.g. "decoded as cp1252"): a succeeded run can still carry them.
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[datetime] = _ts()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ImportRowError(Base):
    __tablename__ = "import_row_errors"

    id: Mapped[int] = mapped_column(primary_key=True)
    import_run_id: Mapped[int] = mapped_column(
        ForeignKey("import_runs.id", ondelete="CASCADE"), index=True
    )
    line_number: Mapped[int] = mapped_column(Integer)
    column: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    raw_row: Mapped[str | None] = mapped_column(Text)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("brand_id", "sku"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"), index=True)
    # The product key: Shopify Handle, GMC item_group_id (or id), or the generic sku column.
    # Indexed on its own for ``lineage SKU`` (the unique constraint leads with the brand).
    sku: Mapped[str] = mapped_column(String(255), index=True)
    current_revision_id: Mapped[int | None] = mapped_column(
        ForeignKey("product_revisions.id", use_alter=True)
    )
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts(onupdate=utcnow)

    revisions: Mapped[list[ProductRevision]] = relationship(
        back_populates="product", foreign_keys="ProductRevision.product_id"
    )
    current_revision: Mapped[ProductRevision | None] = relationship(
        foreign_keys=[current_revision_id], post_update=True
    )


class ProductRevision(Base):
    __tablename__ = "product_revisions"
    __table_args__ = (UniqueConstraint("product_id", "content_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    # Normalized product: title, body_html, vendor, product_type, tags, options,
    # variants [{sku, options{}, image, line}], images, plus extra columns.
    data: Mapped[dict[str, Any]] = mapped_column()
    import_run_id: Mapped[int | None] = mapped_column(ForeignKey("import_runs.id"), index=True)
    source_line: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _ts()

    product: Mapped[Product] = relationship(back_populates="revisions", foreign_keys=[product_id])


class LoraAdapter(Base):
    __tablename__ = "lora_adapters"
    __table_args__ = (UniqueConstraint("name", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str | None] = mapped_column(String(50))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    uri: Mapped[str] = mapped_column(Text)
    base_family: Mapped[str | None] = mapped_column(String(50))
    default_weight: Mapped[float] = mapped_column(Float, default=1.0)
    trigger_word: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _ts()


class Shot(Base):
    __tablename__ = "shots"
    __table_args__ = (
        # Planning is idempotent on the slot (revision, visual variant, template) and the
        # candidate number within it (a template's ``candidates: N``; web review).
        UniqueConstraint(
            "product_revision_id",
            "variant_key",
            "template_name",
            "candidate",
            name="uq_shots_slot_candidate",
        ),
        Index("ix_shots_brand_id_state", "brand_id", "state"),
        # Keyset pages of one state (the review queue, `review list`): without it, page 1 of
        # a long-reviewed catalog steps past every decided shot in id order.
        Index("ix_shots_state_id", "state", "id"),
        # One template's shots by state, in id order: `review list|approve --all-pending
        # --template T` (a brand filter adds ix_shots_brand_id_state).
        Index("ix_shots_template_name_state_id", "template_name", "state", "id"),
        # `lineage SKU` for a variant sku (catalog.lineage._variant_has_sku): its ``sku`` and
        # its visual variant's ``skus``. Postgres only (migration 0013); SQLite scans.
        Index("ix_shots_variant_sku", text("(variant ->> 'sku')")).ddl_if(dialect="postgresql"),
        Index("ix_shots_variant_skus", text("(variant -> 'skus')"), postgresql_using="gin").ddl_if(
            dialect="postgresql"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"))
    product_revision_id: Mapped[int] = mapped_column(ForeignKey("product_revisions.id"), index=True)
    variant_key: Mapped[str] = mapped_column(String(255), default="")
    variant: Mapped[dict[str, Any]] = mapped_column(default=dict)
    brand_config_digest: Mapped[str] = mapped_column(String(64))
    template_name: Mapped[str] = mapped_column(String(100))
    template_digest: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    # [{"term": ..., "kind": "competitor"|"blocked", "field": ...}]
    sanitizer_removals: Mapped[list[Any]] = mapped_column(default=list)
    prompt_warnings: Mapped[list[Any]] = mapped_column(default=list)
    seed: Mapped[int] = mapped_column(BigInteger)
    # 0..N-1 within the slot when the template asks for N candidates (pick 1 of N; web review).
    candidate: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    model_id: Mapped[str] = mapped_column(Text)
    # Filled in by the generator when the weights are first hashed on a worker.
    model_digest: Mapped[str | None] = mapped_column(String(64))
    # [{"name", "sha256", "weight", "uri", "trigger_word"}]
    adapters: Mapped[list[Any]] = mapped_column(default=list)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    scheduler: Mapped[str] = mapped_column(String(50))
    # The output size apart from the model's and the second pass that reaches it
    # (``pipeline.types.HiresSpec`` JSON); {}: the image is width x height, one pass.
    hires: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(20), default=ShotState.planned.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    # The kind of ``error`` (``pipeline.failures.FailureKind``): status groups failures by it
    # and ``retry --kind`` selects them. None for an error from before kinds were recorded.
    error_kind: Mapped[str | None] = mapped_column(String(32), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When a generate message for it was last sent: a broker restart can drop queued messages,
    # and a planned shot enqueued but never attempted is then re-sent by the sweep.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Packshot shots: the catalog image the product pixels come from (None: text-to-image),
    # and ``packshot``: the plan, then the record once generated; its shape is owned by
    # ``pipeline.packshot.records`` (PackshotPlan, PackshotRecord).
    source_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("source_images.id", use_alter=True), index=True
    )
    packshot: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts(onupdate=utcnow, index=True)

    product_revision: Mapped[ProductRevision] = relationship()
    source_image: Mapped[SourceImage | None] = relationship()
    generation: Mapped[Generation | None] = relationship(back_populates="shot")
    # The current decision; a rescore appends rows and moves ``current`` (filter_history).
    filter_result: Mapped[FilterResult | None] = relationship(
        primaryjoin=lambda: and_(Shot.id == FilterResult.shot_id, FilterResult.current),
        viewonly=True,
    )
    filter_history: Mapped[list[FilterResult]] = relationship(
        order_by="FilterResult.id", viewonly=True
    )
    watermark: Mapped[Watermark | None] = relationship(back_populates="shot")
    asset: Mapped[Asset | None] = relationship(back_populates="shot")
    review_events: Mapped[list[ReviewEvent]] = relationship(
        back_populates="shot", order_by="ReviewEvent.id"
    )


class Generation(Base):
    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(primary_key=True)
    # unique: a redelivered task can never write a second generation for a shot.
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), unique=True)
    blob_backend: Mapped[str] = mapped_column(String(20))
    blob_key: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    model_digest: Mapped[str | None] = mapped_column(String(64))
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    device: Mapped[str] = mapped_column(String(200))
    library_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = _ts()

    shot: Mapped[Shot] = relationship(back_populates="generation")


class FilterResult(Base):
    """One gate pass on a shot. Every pass stays; exactly one row per shot is ``current``."""

    __tablename__ = "filter_results"
    __table_args__ = (
        # One current decision per shot: a redelivered gate task cannot add a second one.
        Index(
            "uq_filter_results_current_shot_id",
            "shot_id",
            unique=True,
            postgresql_where=text("current"),
            sqlite_where=text("current"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), index=True)
    current: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    policy_version: Mapped[str] = mapped_column(String(200))
    clip_model: Mapped[str] = mapped_column(String(200))
    # [{"name", "kind": safety|competitor|product_match, "score", "threshold", "triggered"}]
    scores: Mapped[list[Any]] = mapped_column()
    decision: Mapped[str] = mapped_column(String(20))
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = _ts()

    shot: Mapped[Shot] = relationship()


class Watermark(Base):
    __tablename__ = "watermarks"

    id: Mapped[int] = mapped_column(primary_key=True)
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), unique=True)
    method: Mapped[str] = mapped_column(String(20))
    payload: Mapped[str] = mapped_column(String(64))
    verified: Mapped[bool] = mapped_column(Boolean)
    bit_accuracy: Mapped[float | None] = mapped_column(Float)
    # The final file (watermark + provenance metadata) that review shows and publish uploads.
    image_backend: Mapped[str] = mapped_column(String(20))
    image_key: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(50))
    c2pa_signed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _ts()

    shot: Mapped[Shot] = relationship(back_populates="watermark")


class ReviewEvent(Base):
    """Append-only: the current review state is derived from these rows."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(200))  # the name claimed (--reviewer)
    # Who the connection says approved: the Postgres session user, or the OS login on SQLite.
    # None only on events written before this column existed.
    authenticated_reviewer: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _ts()

    shot: Mapped[Shot] = relationship(back_populates="review_events")


class Asset(Base):
    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), unique=True)
    backend: Mapped[str] = mapped_column(String(20))
    bucket: Mapped[str | None] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(1024), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str | None] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(50))
    published_at: Mapped[datetime] = _ts()

    shot: Mapped[Shot] = relationship(back_populates="asset")


class ShotEmbedding(Base):
    """A shot's full-image CLIP feature, L2-normalised, as float16 bytes (``dim`` values).

    ``clip_model`` names the encoder (architecture + checkpoint digest): vectors of different
    models are never compared.
    """

    __tablename__ = "shot_embeddings"

    id: Mapped[int] = mapped_column(primary_key=True)
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), unique=True)
    clip_model: Mapped[str] = mapped_column(String(200), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _ts()


class SourceStatus(enum.StrEnum):
    pending = "pending"
    fetched = "fetched"
    failed = "failed"


class SourceImage(Base):
    """An image the catalog names, fetched once into the blob store (content-addressed)."""

    __tablename__ = "source_images"

    id: Mapped[int] = mapped_column(primary_key=True)
    # sha256 of the URL: URLs run to 2 KB, too long for a portable unique text index.
    url_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=SourceStatus.pending.value, index=True)
    # Content: the bytes as fetched (the blob is sources/<sha256[:2]>/<sha256>).
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    # What the decode did (source mode, ICC/EXIF conversions) and the final URL after redirects.
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    etag: Mapped[str | None] = mapped_column(String(200))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    blob_backend: Mapped[str | None] = mapped_column(String(20))
    blob_key: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts(onupdate=utcnow)


class SourceImageRef(Base):
    """One image of a product revision, at its catalog position (1-based). A variant's own
    image is one of them (import adds it to the product's images); which variant names which
    image stays in the revision data (``variants[].image``)."""

    __tablename__ = "source_image_refs"
    __table_args__ = (UniqueConstraint("product_revision_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: the unique constraint leads with it.
    product_revision_id: Mapped[int] = mapped_column(
        ForeignKey("product_revisions.id", ondelete="CASCADE")
    )
    source_image_id: Mapped[int] = mapped_column(ForeignKey("source_images.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 1-based, in the product's image order
    raw: Mapped[str] = mapped_column(Text)  # the cell as the catalog wrote it
    source_line: Mapped[int | None] = mapped_column(Integer)

    source_image: Mapped[SourceImage] = relationship()


class TrainingState(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class LoraTraining(Base):
    """One brand LoRA training run: what went in (dataset, base model, hyperparameters),
    how far it got, and the adapter it produced."""

    __tablename__ = "lora_trainings"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), unique=True)  # checkpoints' blob prefix
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    trigger_word: Mapped[str] = mapped_column(String(100))
    source_uri: Mapped[str] = mapped_column(Text)
    # sha256 over sorted "image sha256:caption sha256" lines: the dataset's identity.
    dataset_digest: Mapped[str] = mapped_column(String(64), index=True)
    files: Mapped[list[Any]] = mapped_column(default=list)  # [{file, sha256, caption_sha256}]
    base_model: Mapped[str] = mapped_column(Text)
    base_model_digest: Mapped[str | None] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(20), default=TrainingState.queued.value, index=True)
    steps_total: Mapped[int] = mapped_column(Integer)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {step, loss, eta_s}
    loss_summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoints: Mapped[list[Any]] = mapped_column(default=list)  # blob keys kept
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("lora_adapters.id"), index=True)
    adapter_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    adapter_uri: Mapped[str | None] = mapped_column(Text)
    validation_key: Mapped[str | None] = mapped_column(Text)  # the contact sheet's blob key
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts(onupdate=utcnow)

    adapter: Mapped[LoraAdapter | None] = relationship()


# --- web review ---


class ReviewerToken(Base):
    """A reviewer's token for the browser and the HTTP API (``shotline review token``).

    Only the sha256 of the token is stored: tokens are 256-bit random strings, so a fast hash
    is enough (nothing to brute-force), and a leaked table logs nobody in. Revoking sets
    ``revoked_at``; sessions made with the token end at their next request. Logging out sets
    ``sessions_after``: the token's sessions made before then end, the token stays good."""

    __tablename__ = "reviewer_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)  # the reviewer it speaks for
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _ts()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Logging out sets it: browser sessions made with the token before it end, so a copied
    # session cookie dies with the logout instead of living out its 12 h.
    sessions_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- delivery ---


class AssetRendition(Base):
    """One channel's file made from a published master (``channels`` in the brand file),
    stored next to it, content-addressed. Its watermark was decoded after encoding."""

    __tablename__ = "asset_renditions"
    __table_args__ = (UniqueConstraint("asset_id", "channel", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: the unique constraint leads with it.
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), index=True)
    channel: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(20))
    bucket: Mapped[str | None] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(1024), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(50))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    quality: Mapped[int | None] = mapped_column(Integer)  # the one used (max_bytes may lower it)
    watermark_verified: Mapped[bool] = mapped_column(Boolean)
    bit_accuracy: Mapped[float | None] = mapped_column(Float)
    xmp_ai_tag: Mapped[bool] = mapped_column(Boolean)  # trainedAlgorithmicMedia read back
    icc_srgb: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = _ts()


class AssetRecall(Base):
    """Append-only: a published asset taken out of every later export, by whom and why."""

    __tablename__ = "asset_recalls"

    id: Mapped[int] = mapped_column(primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    # Who the connection says recalled it (the Postgres session user, the OS login on SQLite).
    recalled_by: Mapped[str] = mapped_column(String(200))
    # What selected it: {"assets": [...]} | {"lora": "name@sha"} | {"shots": [...]}.
    selector: Mapped[dict[str, Any]] = mapped_column(default=dict)
    objects: Mapped[str] = mapped_column(String(20), default="kept")  # kept | deleted
    created_at: Mapped[datetime] = _ts()


class ShotErrorHistory(Base):
    """Append-only: a failed shot's error as it was when an operator retried the shot
    (``shotline run --retry-failed``); the shot row then carries only the latest try."""

    __tablename__ = "shot_error_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id"), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retried_by: Mapped[str] = mapped_column(String(200))
    retried_at: Mapped[datetime] = _ts()
