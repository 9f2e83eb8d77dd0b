"""Issue 31, class 6: the watermark's check code is keyed with the deployment's secret (key
id in the payload), and ``verify`` compares the file with what the catalog recorded."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from pipeline.gate import stage as g
from pipeline.gate import watermark as wm
from pipeline.settings import Settings
from pipeline.storage import LocalBlobStore
from tasks.cli import app
from tests import factories as f
from tests.pipeline.test_clip_filter import FakeEncoder
from tests.pipeline.test_gate import PROV

KEY = "1:deployment-secret-0123456789"
OTHER = "1:somebody-elses-secret-98765"


def _image() -> Image.Image:
    im = Image.new("RGB", (512, 512), (255, 255, 255))
    ImageDraw.Draw(im).rectangle((140, 160, 380, 420), fill=(180, 60, 40))
    return im


def _final(shot_id: int, tmp_path: Path, **kw: object) -> bytes:
    s = Settings(_env_file=None, model_cache_dir=tmp_path / "models", **kw)  # type: ignore[call-arg]
    gate = g.load_gate(s, encoder=FakeEncoder())
    return gate.finalize(shot_id, _image(), dataclasses.replace(PROV, shot_id=shot_id), "png").data


def test_check_code_is_keyed_and_rotates() -> None:
    ours = wm.WatermarkKeys.parse(KEY)
    theirs = wm.WatermarkKeys.parse(OTHER)
    marked = wm.embed(_image(), 4242, wm.WatermarkConfig(), ours)
    got = wm.decode(marked.image, wm.WatermarkConfig(), keys=ours)
    assert got.verified and got.shot_id == 4242 and got.key_id == 1
    # Someone with the source but not the secret: nothing they stamp verifies here.
    forged = wm.embed(_image(), 4242, wm.WatermarkConfig(), theirs)
    assert not wm.decode(forged.image, wm.WatermarkConfig(), keys=ours).verified
    # Rotation: key 2 writes, key 1 still verifies what it wrote; the payload names the key.
    rotated = wm.WatermarkKeys.parse("2:a-brand-new-secret-for-2026", [KEY])
    again = wm.decode(marked.image, wm.WatermarkConfig(), keys=rotated)
    assert again.verified and again.key_id == 1
    assert wm.make_payload(7, rotated)[4] >> 4 == 2
    # The unkeyed payloads written before keys verify only where legacy is accepted.
    legacy = wm.embed(_image(), 4242, wm.WatermarkConfig())
    assert wm.decode(legacy.image, wm.WatermarkConfig(), keys=ours).key_id == wm.LEGACY
    strict = wm.WatermarkKeys.parse(KEY, legacy=False)
    assert not wm.decode(legacy.image, wm.WatermarkConfig(), keys=strict).verified


@pytest.fixture
def catalog_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, int]]:
    """A SQLite catalog with one published shot whose final was stamped under KEY."""
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'v.db'}"
    migrate.upgrade(url)
    monkeypatch.setenv("SHOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SHOTLINE_WATERMARK_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    store = LocalBlobStore(tmp_path / "var" / "blobs")
    engine = make_engine(url)
    with make_sessionmaker(engine).begin() as s:
        brand = f.make_brand(s)
        run = f.make_import_run(s, brand)
        rev = f.make_product(s, brand, import_run=run)
        shot = f.make_shot(s, rev, state="published")
        data = _final(shot.id, tmp_path, watermark_key=KEY)
        mark = f.make_watermark(s, shot, data, store, method="dwtDctSvd-y-x1")
        mark.payload = wm.make_payload(shot.id, wm.WatermarkKeys.parse(KEY)).hex()
        asset = f.make_asset(s, shot, store)
        ids = (shot.id, asset.id)
    (tmp_path / "published.png").write_bytes(data)
    engine.dispose()
    yield ids


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.stdout, result.stderr


def test_verify_exact_file_is_the_asset(catalog_env: tuple[int, int], tmp_path: Path) -> None:
    shot_id, asset_id = catalog_env
    code, out, err = run("verify", str(tmp_path / "published.png"))
    assert code == 0, err
    assert f"this is asset {asset_id} (shot {shot_id}), byte for byte (key 1)" in out
    assert "watermark valid" not in out.splitlines()[0]


def test_verify_edited_copy_says_how_far(catalog_env: tuple[int, int], tmp_path: Path) -> None:
    shot_id, _ = catalog_env
    with Image.open(tmp_path / "published.png") as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=80)
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(buf.getvalue())
    code, out, err = run("verify", str(copy))
    assert code == 0, err
    first = out.splitlines()[0]
    assert f"the watermark says shot {shot_id} (key 1); the pixels differ from the published" in (
        first
    )
    assert "levels on average" in first and "PSNR" in first


def test_verify_refuses_forgeries(catalog_env: tuple[int, int], tmp_path: Path) -> None:
    shot_id, _ = catalog_env
    # Stamped with another deployment's secret: no valid watermark at all.
    other = tmp_path / "other.png"
    other.write_bytes(_final(shot_id, tmp_path, watermark_key=OTHER))
    code, out, _ = run("verify", str(other))
    assert code == 1 and "no valid watermark" in out
    # Stamped with the unkeyed code anyone can compute: the recorded payload's key id says
    # this shot carries keyed codes only.
    legacy = tmp_path / "legacy.png"
    legacy.write_bytes(_final(shot_id, tmp_path, watermark_key=None))
    code, out, _ = run("verify", str(legacy))
    assert code == 1 and "forged watermark" in out.splitlines()[0]
