"""A worker notices an edited brand YAML at its next batch (a stat per call, no restart),
and keeps the last good config while an edit does not load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.brand.config import BrandConfigError
from pipeline.settings import Settings
from tasks.context import WorkerContext

ROOT = Path(__file__).resolve().parents[2]


def _touch_later(path: Path, seconds: int) -> None:
    st = path.stat()  # a fast edit can land in the same mtime tick: move it on explicitly
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_an_edited_brand_file_is_read_again(
    tmp_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    brands = tmp_settings.var_dir / "brands"
    brands.mkdir(parents=True)
    path = brands / "acme.yaml"
    shutil.copy(ROOT / "samples" / "brands" / "acme.yaml", path)
    ctx = WorkerContext.build(tmp_settings.model_copy(update={"brands_dir": brands}))
    first = ctx.brand_config("acme")
    assert ctx.brand_config("acme") is first  # unchanged file: the cached object

    text = path.read_text()
    assert "competitor_threshold: 0.3" in text
    path.write_text(text.replace("competitor_threshold: 0.3", "competitor_threshold: 0.25"))
    _touch_later(path, 1)
    edited = ctx.brand_config("acme")
    assert edited.safety.competitor_threshold == 0.25

    path.write_text("name: acme\nsafety: [this is not a mapping\n")  # a half-saved edit
    _touch_later(path, 2)
    with caplog.at_level("WARNING"):
        assert ctx.brand_config("acme") is edited
    assert "keeping the last good config" in caplog.text
    with pytest.raises(BrandConfigError):  # a rescore wants the file as it is now
        ctx.brand_config("acme", fresh=True)
    ctx.close()
