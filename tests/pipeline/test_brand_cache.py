"""One cache of loaded brand files (path + mtime + size + inode) behind the worker's
``brand_config``, the review authorisation and the web app's reject reasons: an unchanged
file is parsed once, an edit is read at its next use, a broken file is remembered until it
changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from catalog.models import Brand
from catalog.review import brand_reviewers
from pipeline.brand import loader
from pipeline.brand.config import BrandConfigError
from pipeline.settings import Settings
from tasks.context import WorkerContext
from tasks.web.reasons import ReasonCache

ROOT = Path(__file__).resolve().parents[2]


def _later(path: Path, seconds: int) -> None:
    st = path.stat()  # two writes can land in one mtime tick: move it on explicitly
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every brand file parsed and validated (whoever imported ``load_brand``, it validates
    through ``parse_brand``), in order; a file that is not YAML fails before it."""
    seen: list[Path] = []
    real = loader.parse_brand

    def counting(raw: Any, *args: Any, **kw: Any) -> Any:
        seen.append(kw.get("path") or Path("?"))
        return real(raw, *args, **kw)

    monkeypatch.setattr(loader, "parse_brand", counting)
    return seen


def test_a_file_is_parsed_again_only_when_it_changes(tmp_path: Path, parses: list[Path]) -> None:
    path = tmp_path / "acme.yaml"
    shutil.copy(ROOT / "samples" / "brands" / "acme.yaml", path)
    cache = loader.BrandCache()
    first = cache.load(path)
    assert cache.load(path) is first and cache.find(tmp_path, "acme") is first
    assert len(parses) == 1

    path.write_text(path.read_text().replace("reviewers: [demo]", "reviewers: [alice]"))
    _later(path, 1)
    assert cache.load(path).reviewers == ["alice"]
    assert len(parses) == 2
    assert cache.load(path, fresh=True) is not first and len(parses) == 3

    path.write_text("name: acme\nbase_model: [a]\n")  # an edit that does not validate
    _later(path, 2)
    for _ in range(3):  # the same error each time, parsed once
        with pytest.raises(BrandConfigError, match="base_model"):
            cache.load(path)
    assert len(parses) == 4

    path.unlink()
    with pytest.raises(BrandConfigError, match="no brand config named 'acme'"):
        cache.find(tmp_path, "acme")


def test_worker_review_and_web_share_one_parse(
    tmp_settings: Settings, parses: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "brand_cache", loader.BrandCache())
    for module in ("tasks.context", "tasks.web.reasons", "catalog.review"):
        monkeypatch.setattr(f"{module}.brand_cache", loader.brand_cache)
    brands = tmp_settings.var_dir / "brands"
    brands.mkdir(parents=True)
    path = brands / "acme.yaml"
    text = (ROOT / "samples" / "brands" / "acme.yaml").read_text()
    path.write_text(text + "review:\n  reject_reasons: [blurry]\n")
    ctx = WorkerContext.build(tmp_settings.model_copy(update={"brands_dir": brands}))
    row = Brand(name="acme", config={})

    assert ctx.brand_config("acme").reviewers == ["demo"]
    assert brand_reviewers(row, brands) == ["demo"]
    assert ReasonCache(brands).for_brand(row) == ["blurry"]
    assert brand_reviewers(row, brands) == ["demo"]  # each decision: a stat, no parse
    assert len(parses) == 1

    path.write_text(text.replace("reviewers: [demo]", "reviewers: [carol]"))
    _later(path, 1)
    assert brand_reviewers(row, brands) == ["carol"]  # the edit, at the next decision
    assert ctx.brand_config("acme").reviewers == ["carol"]
    assert ReasonCache(brands).for_brand(row) != ["blurry"]  # the file lists none now
    assert len(parses) == 2
    ctx.close()
