"""Shared fixtures of the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Embedded settings on the CPU with the tiny preset (the shared model cache)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=tmp_path_factory.mktemp("var"),
        model_cache_dir=ROOT / "var" / "models",
        device="cpu",
        batch_size=4,
    )
