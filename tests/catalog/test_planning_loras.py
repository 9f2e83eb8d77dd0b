"""``plan`` checks each LoRA against the model before a shot pins it; a partial match the
brand allows is recorded in each shot's adapters (the lineage says what was applied)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.models import Shot
from catalog.planning import PlanningError, plan_shots
from pipeline.brand.loader import load_brand
from pipeline.digests import sha256_file
from pipeline.generate import lora_check
from pipeline.generate.lora_check import check_lora_cached, target_key
from pipeline.generate.modelspec import config_folder
from pipeline.settings import Settings
from tests import lora_files
from tests.catalog.test_planning import add_product, tee_data


def _brand(tmp_path: Path, lora: Path, extra: str = "") -> Path:
    brand = tmp_path / "demo.yaml"
    brand.write_text(
        "name: demo\n"
        "loras:\n"
        f'  - {{name: style, path: {lora}, sha256: "{sha256_file(lora)}"{extra}}}\n'
        "templates:\n"
        "  hero: {preset: tiny_fast, prompt: 'photo of {{ product.title }}'}\n",
        encoding="utf-8",
    )
    return brand


def test_plan_refuses_a_lora_that_fits_nothing(
    session: Session, tmp_path: Path, tmp_settings: Settings
) -> None:
    lora = lora_files.wrong_prefix(tmp_path / "style.safetensors")
    cfg = load_brand(_brand(tmp_path, lora))
    add_product(session, cfg, "mug", {**tee_data("Mug"), "key": "mug", "variants": []})
    with pytest.raises(PlanningError, match=r"LoRA 'style': .*no LoRA tensor matches") as info:
        plan_shots(session, cfg, tmp_settings)
    assert str(lora) in str(info.value)
    assert session.scalar(select(Shot.id)) is None


def test_allowed_partial_match_is_recorded_on_the_shot(
    session: Session, tmp_path: Path, tmp_settings: Settings
) -> None:
    lora = lora_files.half_matching(tmp_path / "style.safetensors")
    cfg = load_brand(_brand(tmp_path, lora))
    add_product(session, cfg, "mug", {**tee_data("Mug"), "key": "mug", "variants": []})
    with pytest.raises(PlanningError, match="only 32 of 64 LoRA tensors"):
        plan_shots(session, cfg, tmp_settings)

    cfg = load_brand(_brand(tmp_path, lora, ", allow_partial: true"))
    summary = plan_shots(session, cfg, tmp_settings)
    shot = session.get(Shot, summary.shots[0])
    assert shot is not None
    assert shot.adapters[0]["matched_tensors"] == 32
    assert shot.adapters[0]["lora_tensors"] == 64


def test_results_are_cached_by_sha256(
    tmp_path: Path, tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora = lora_files.half_matching(tmp_path / "a" / "style.safetensors")
    folder = config_folder("tiny", tmp_settings)
    assert folder is not None
    cache = tmp_path / "cache"
    first = check_lora_cached(lora, sha256_file(lora), folder, cache)
    stored = json.loads((cache / lora_check.CHECK_CACHE_NAME).read_text())
    assert list(stored) == [f"{lora_check.CHECK_VERSION}:{sha256_file(lora)}:{target_key(folder)}"]

    # The same bytes elsewhere: answered from the cache (nothing is inspected), named as now.
    copy = tmp_path / "b" / "style.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(lora.read_bytes())

    def boom(*_: object) -> None:
        raise AssertionError("inspected again")

    monkeypatch.setattr(lora_check, "inspect_lora", boom)
    again = check_lora_cached(copy, sha256_file(copy), folder, cache)
    assert (again.matched, again.total, again.file) == (first.matched, first.total, str(copy))
