"""Permanent load errors (a model or an adapter that does not load) fail their shots at the
first attempt, with their kind and a one-line reason naming the file; nothing is retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Shot
from pipeline.brand.loader import find_brand
from pipeline.failures import MAX_REASON_CHARS
from pipeline.settings import Settings
from tasks.runner import run_line
from tests.factories import make_brand, make_product, make_shot


def _seed(settings: Settings, n: int, **extra: Any) -> list[int]:
    engine = make_engine(settings.database_url)
    cfg = find_brand(settings.brands_dir, "acme")
    try:
        with make_sessionmaker(engine).begin() as s:
            row = make_brand(s, name="acme", config=cfg.to_json(), config_digest=cfg.digest())
            return [
                make_shot(s, make_product(s, row, f"SKU-{i:05d}", line=i + 2), **extra).id
                for i in range(n)
            ]
    finally:
        engine.dispose()


def _shots(settings: Settings, ids: list[int]) -> list[Shot]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            return list(s.scalars(select(Shot).where(Shot.id.in_(ids))))
    finally:
        engine.dispose()


def test_missing_checkpoint_fails_every_shot_at_the_first_attempt(
    tmp_settings: Settings, tmp_path: Path
) -> None:
    assert tmp_settings.max_attempts > 1  # so a retry would show as attempts > 1
    migrate.upgrade(tmp_settings.database_url)
    missing = tmp_path / "gone" / "brand-model.safetensors"
    ids = _seed(tmp_settings, 3, model_id=str(missing))

    run_line(tmp_settings, brand="acme", progress=False)

    shots = _shots(tmp_settings, ids)
    assert [(s.state, s.attempts, s.error_kind) for s in shots] == [("failed", 1, "model_load")] * 3
    for shot in shots:
        assert "brand-model.safetensors" in shot.error
        assert len(shot.error) <= MAX_REASON_CHARS and "\n" not in shot.error


def test_missing_adapter_fails_at_the_first_attempt(tmp_settings: Settings, tmp_path: Path) -> None:
    migrate.upgrade(tmp_settings.database_url)
    adapter = {
        "name": "brand_style",
        "sha256": "0" * 64,
        "weight": 0.8,
        "uri": str(tmp_path / "loras" / "brand_style.safetensors"),
        "trigger_word": None,
    }
    ids = _seed(tmp_settings, 2, adapters=[adapter])

    run_line(tmp_settings, brand="acme", progress=False)

    shots = _shots(tmp_settings, ids)
    assert [(s.state, s.attempts, s.error_kind) for s in shots] == [
        ("failed", 1, "lora_incompatible")
    ] * 2
    assert all("brand_style.safetensors" in s.error for s in shots)
    assert all(len(s.error) <= MAX_REASON_CHARS for s in shots)


def test_only_load_errors_are_permanent_and_reasons_are_one_short_line() -> None:
    from pipeline.failures import FailureKind, is_permanent, one_line

    assert {k for k in FailureKind if is_permanent(k)} == {
        FailureKind.model_load,
        FailureKind.lora_incompatible,
    }
    dump = "LoRA 'x': cannot load /l/x.safetensors: keys\n" + repr(sorted(map(str, range(2000))))
    line = one_line(dump)
    assert MAX_REASON_CHARS - 2 <= len(line) <= MAX_REASON_CHARS and "\n" not in line
    assert line.endswith("…")
    assert line.startswith("LoRA 'x': cannot load /l/x.safetensors: keys ['0', '1', '10'")
