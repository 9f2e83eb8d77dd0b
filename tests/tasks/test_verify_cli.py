"""``shotline verify`` and ``shotline calibrate`` through Typer's CliRunner."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from pipeline.gate import stage as g
from pipeline.settings import Settings
from tasks.cli import app
from tasks.cli.quality.verify_cmd import verify_report
from tests.conftest import ROOT
from tests.pipeline.test_clip_filter import RED, FakeEncoder
from tests.pipeline.test_gate import PROV
from tests.pipeline.test_provenance import make_test_chain


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOTLINE_BRANDS_DIR", str(ROOT / "samples" / "brands"))
    monkeypatch.setenv("SHOTLINE_MODEL_CACHE_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SHOTLINE_DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)  # no stray .env from the working copy
    yield


def final_file(tmp_path: Path, shot_id: int, fmt: str = "png", **kw: object) -> Path:
    s = Settings(_env_file=None, model_cache_dir=tmp_path / "models", **kw)  # type: ignore[call-arg]
    im = Image.new("RGB", (512, 512), (255, 255, 255))
    ImageDraw.Draw(im).rectangle((140, 160, 380, 420), fill=(180, 60, 40))
    final = g.load_gate(s, encoder=FakeEncoder()).finalize(
        shot_id, im, dataclasses.replace(PROV, shot_id=shot_id), fmt
    )
    path = tmp_path / f"shot-{shot_id}.{final.ext}"
    path.write_bytes(final.data)
    return path


def test_verify_valid_image_json(tmp_path: Path) -> None:
    path = final_file(tmp_path, 123456, "jpeg")
    code, out, err = run("verify", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["shot_id"] == 123456 and report["verified"] and report["status"] == "valid"
    assert report["xmp_shot_id"] == 123456 and report["ai_generated_tag"] is True
    assert report["metadata_matches_watermark"] is True
    assert report["bit_accuracy"] == 1.0 and report["c2pa"] is None


def test_verify_human_output(tmp_path: Path) -> None:
    code, out, _ = run("verify", str(final_file(tmp_path, 42)))
    assert code == 0
    assert "shot 42: watermark valid" in out
    assert "XMP: shot 42, AI-generated tag present" in out and "C2PA: none" in out


def test_verify_resized_copy_without_metadata(tmp_path: Path) -> None:
    with Image.open(final_file(tmp_path, 77)) as im:
        small = tmp_path / "small.jpg"
        im.convert("RGB").resize((256, 256), Image.LANCZOS).save(small, quality=85)
    code, out, _ = run("verify", str(small))
    assert code == 0 and "shot 77: watermark valid" in out and "resized" in out
    assert "XMP: none" in out


def test_verify_unwatermarked_image_exits_1(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "random.png"
    Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(path)
    code, out, _ = run("verify", str(path))
    assert code == 1 and "no valid watermark" in out
    code, out, _ = run("verify", str(path), "--json")
    assert code == 1 and json.loads(out)["shot_id"] is None


def test_verify_missing_or_unreadable_file_exits_2(tmp_path: Path) -> None:
    code, out, err = run("verify", str(tmp_path / "nope.png"))
    assert code == 2 and out == "" and "nope.png: file not found" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    code, _, err = run("verify", str(bad))
    assert code == 2 and "bad.png" in err and "not a readable image" in err
    assert "Traceback" not in err


def test_verify_reports_c2pa_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = make_test_chain()
    for name, data in (
        ("cert.pem", chain.cert_chain_pem),
        ("key.pem", chain.key_pem),
        ("root.pem", chain.root_pem),
    ):
        (tmp_path / name).write_bytes(data)
    path = final_file(
        tmp_path, 5, "png", c2pa_cert=tmp_path / "cert.pem", c2pa_key=tmp_path / "key.pem"
    )
    code, out, _ = run("verify", str(path), "--json")
    assert code == 0 and json.loads(out)["c2pa"]["validation_state"] == "Valid"
    monkeypatch.setenv("SHOTLINE_C2PA_TRUST_ANCHORS", str(tmp_path / "root.pem"))
    code, out, _ = run("verify", str(path))
    assert code == 0 and "C2PA: Trusted" in out


def test_verify_report_flags_edited_metadata(tmp_path: Path) -> None:
    """A file whose XMP was rewritten to another shot id is caught by the watermark."""
    from pipeline.gate.provenance import build_xmp, encode_image

    with Image.open(final_file(tmp_path, 10)) as im:
        forged = encode_image(im, "png", build_xmp(dataclasses.replace(PROV, shot_id=11)))
    report = verify_report(forged)
    assert report["shot_id"] == 10 and report["xmp_shot_id"] == 11
    assert report["metadata_matches_watermark"] is False


def write_images(folder: Path, color: tuple[int, int, int] | None, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        im = Image.new("RGB", (64, 64), (255, 255, 255))
        if color is not None:
            ImageDraw.Draw(im).rectangle((4 + i, 4, 30 + i, 30), fill=color)
        im.save(folder / f"{i}.png")


def test_calibrate_reports_per_concept_thresholds(tmp_path: Path) -> None:
    write_images(tmp_path / "pos" / "Nike", RED, 3)
    write_images(tmp_path / "pos" / "nsfw", (250, 200, 180), 2)
    write_images(tmp_path / "neg", None, 3)
    code, out, err = run(
        "calibrate",
        "--brand",
        "acme",
        "--positives",
        str(tmp_path / "pos"),
        "--negatives",
        str(tmp_path / "neg"),
        "--precision",
        "0.9",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["brand"] == "acme" and report["clip_model"].startswith("tiny-clip")
    rows = {r["concept"]: r for r in report["concepts"]}
    assert rows.keys() == {"Nike", "nsfw"}
    assert rows["Nike"]["kind"] == "competitor" and rows["nsfw"]["kind"] == "safety"
    for r in rows.values():
        assert r["target"] == 0.9 and r["n_negatives"] == 3
        # The tiny CLIP is random: whether 90 % is reachable is not the point; consistency is.
        assert (r["threshold"] is None) == (not r["reached"])
        if r["reached"]:
            assert r["precision"] >= 0.9
    code, out, err = run(
        "calibrate",
        "--brand",
        "acme",
        "--positives",
        str(tmp_path / "pos"),
        "--negatives",
        str(tmp_path / "neg"),
    )
    assert code == 0, err
    assert "Nike" in out and "nsfw" in out


def test_calibrate_user_errors(tmp_path: Path) -> None:
    write_images(tmp_path / "neg", None, 1)
    (tmp_path / "flat").mkdir()
    code, _, err = run(
        "calibrate",
        "--brand",
        "nope",
        "--positives",
        str(tmp_path / "flat"),
        "--negatives",
        str(tmp_path / "neg"),
    )
    assert code == 2 and "no brand config named 'nope'" in err
    code, _, err = run(
        "calibrate",
        "--brand",
        "acme",
        "--positives",
        str(tmp_path / "flat"),
        "--negatives",
        str(tmp_path / "neg"),
    )
    assert code == 2 and "one subfolder per concept" in err
    write_images(tmp_path / "pos" / "rival", RED, 1)
    code, _, err = run(
        "calibrate",
        "--brand",
        "acme",
        "--positives",
        str(tmp_path / "pos"),
        "--negatives",
        str(tmp_path / "neg"),
    )
    assert code == 2 and "unknown concept 'rival'" in err
    (tmp_path / "pos" / "rival" / "broken.png").write_bytes(b"xx")
    code, _, err = run(
        "calibrate",
        "--brand",
        "acme",
        "--positives",
        str(tmp_path / "pos"),
        "--negatives",
        str(tmp_path / "neg"),
    )
    assert code == 2 and "broken.png" in err
