"""CLIP filter: decision edges on injected scores, crop grid, caching, calibration, tiny CLIP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pipeline.brand.config import BrandConfig, CompetitorSpec, SafetyConcept, SafetyPolicy
from pipeline.gate import scores as cf
from pipeline.gate.calibration import calibrate, threshold_for_precision
from pipeline.gate.clip import load_clip_encoder, load_open_clip
from pipeline.gate.policy import GateError, GatePolicy, ScoreSet, decide
from pipeline.settings import Settings
from pipeline.types import GateItem

RED = (255, 0, 0)
GREEN = (0, 255, 0)


class FakeEncoder:
    """Deterministic stand-in for CLIP that responds to colour.

    Image embedding ~ (3*red fraction, 3*green fraction, rest, 0); text embeddings: prompts
    naming Nike -> red axis, Globex -> green axis, product prompts -> "rest" axis, anything
    else (safety concepts) -> the fourth axis. Counts calls to check batching and caching.
    """

    name = "fake-colour-clip"

    def __init__(self) -> None:
        self.image_calls: list[int] = []
        self.text_calls: list[list[str]] = []

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.image_calls.append(len(images))
        out = []
        for im in images:
            a = np.asarray(im.convert("RGB"))
            red = np.mean(np.all(a == RED, axis=-1))
            green = np.mean(np.all(a == GREEN, axis=-1))
            v = np.array([3 * red, 3 * green, 1 - red - green, 0.0])
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls.append(list(texts))
        out = []
        for t in texts:
            axis = 0 if "Nike" in t else 1 if "Globex" in t else 2 if "product photo" in t else 3
            out.append(np.eye(4)[axis])
        return np.stack(out).astype(np.float32)


def brand(logos: list[str] | None = None, logo_threshold: float = 0.85) -> BrandConfig:
    return BrandConfig(
        name="acme",
        competitors=[
            CompetitorSpec(name="Nike", aliases=["Nike Inc"], logos=logos or []),
            CompetitorSpec(name="Globex"),
        ],
        safety=SafetyPolicy(
            version="7",
            concepts=[SafetyConcept(name="gore", prompt="gore, blood", threshold=0.3)],
            competitor_threshold=0.3,
            logo_threshold=logo_threshold,
            product_match_min=0.15,
        ),
    )


def white_with_patch(color: tuple[int, int, int] | None, size: int = 300) -> Image.Image:
    im = Image.new("RGB", (size, size), (255, 255, 255))
    if color is not None:  # a 40x40 "logo" well inside the top-left tile of a 3x3 grid
        ImageDraw.Draw(im).rectangle((20, 20, 59, 59), fill=color)
    return im


# --- decision edges on injected scores ------------------------------------------------------


def scores(safety: float = 0.0, comp: float = 0.0, logo: float = 0.0, product: float = 0.5):  # type: ignore[no-untyped-def]
    return ScoreSet(
        safety=np.array([safety]),
        competitor=np.array([comp, 0.0]),
        competitor_crop=np.array([4, 0]),
        logo=np.array([logo, np.nan]),
        logo_crop=np.array([2, 0]),
        product=product,
    )


def below(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


def above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(below(0.3), "pending_review"), (0.3, "rejected"), (above(0.3), "rejected")],
)
def test_safety_threshold_edge(value: float, expected: str) -> None:
    policy = GatePolicy.from_brand(brand())
    d = decide(scores(safety=value), policy, "m")
    assert d.decision == expected
    assert d.reasons == ([] if expected == "pending_review" else ["safety:gore"])
    row = next(r for r in d.scores if r["kind"] == "safety")
    assert row == {
        "name": "gore",
        "kind": "safety",
        "score": value,
        "threshold": 0.3,
        "triggered": expected == "rejected",
    }
    assert d.policy_version == policy.version and d.clip_model == "m"


@pytest.mark.parametrize(("value", "hit"), [(below(0.3), False), (0.3, True), (above(0.3), True)])
def test_competitor_threshold_edge(value: float, hit: bool) -> None:
    d = decide(scores(comp=value), GatePolicy.from_brand(brand()), "m")
    assert d.reasons == (["competitor:Nike"] if hit else [])
    row = next(r for r in d.scores if r["kind"] == "competitor" and r["name"] == "Nike")
    assert row["triggered"] is hit and row["crop"] == 4


@pytest.mark.parametrize(
    ("value", "hit"), [(below(0.85), False), (0.85, True), (above(0.85), True)]
)
def test_logo_threshold_edge(value: float, hit: bool) -> None:
    policy = GatePolicy.from_brand(brand(logos=["/nonexistent/nike.png"]))
    d = decide(scores(logo=value), policy, "m")
    assert d.reasons == (["logo:Nike"] if hit else [])
    logo_rows = [r for r in d.scores if r["kind"] == "logo"]
    assert [r["name"] for r in logo_rows] == ["Nike"]  # Globex has no logo: no logo row
    assert logo_rows[0]["triggered"] is hit and logo_rows[0]["crop"] == 2


@pytest.mark.parametrize(
    ("value", "rejected"), [(below(0.15), True), (0.15, False), (above(0.15), False)]
)
def test_product_match_edge(value: float, rejected: bool) -> None:
    d = decide(scores(product=value), GatePolicy.from_brand(brand()), "m")
    assert d.decision == ("rejected" if rejected else "pending_review")
    assert d.reasons == (["product_mismatch"] if rejected else [])
    row = d.scores[-1]
    assert row["kind"] == "product_match" and row["threshold"] == 0.15
    assert row["triggered"] is rejected


def test_every_reason_is_listed() -> None:
    d = decide(
        scores(safety=0.9, comp=0.9, logo=0.9, product=0.0),
        GatePolicy.from_brand(brand(logos=["x.png"])),
        "m",
    )
    assert d.reasons == ["safety:gore", "competitor:Nike", "logo:Nike", "product_mismatch"]
    assert len(d.scores) == 5  # gore, Nike, Nike logo, Globex, product


def test_scores_from_injected_embeddings() -> None:
    """compute_scores is plain cosine algebra: unit vectors at known angles give known scores."""
    policy = GatePolicy.from_brand(brand())
    e = np.eye(4)
    pe = cf.PolicyEmbeddings(
        safety=e[[3]],
        competitor_text=e[[0, 0, 1]],  # Nike, Nike Inc, Globex
        competitor_owner=np.array([0, 0, 1]),
        logos=np.zeros((0, 4)),
        logo_owner=np.zeros(0, dtype=int),
    )
    full = 0.6 * e[2] + 0.8 * e[3]  # cos(gore) = 0.8, cos(product) = 0.6
    tile = 0.28 * e[0] + 0.96 * e[2]  # Nike at 0.28 in crop 1 only
    s = cf.compute_scores(np.stack([full, tile]), e[2], pe, len(policy.competitors))
    assert s.safety[0] == pytest.approx(0.8)
    assert s.product == pytest.approx(0.6)
    assert s.competitor[0] == pytest.approx(0.28) and s.competitor_crop[0] == 1
    assert s.competitor[1] == pytest.approx(0.0)
    assert np.isnan(s.logo).all()
    d = decide(s, policy, "m")
    assert d.decision == "rejected" and d.reasons == ["safety:gore"]


# --- the filter with a fake encoder ------------------------------------------------------------


def test_crop_grid_finds_small_logo_the_full_image_misses() -> None:
    policy = GatePolicy.from_brand(brand())
    item = GateItem(1, white_with_patch(RED), "mug")

    full_only = cf.ClipFilter(FakeEncoder(), crop_grid=1).check([item], policy)[0]
    nike = next(r for r in full_only.scores if r["name"] == "Nike")
    assert nike["score"] < 0.1 and not nike["triggered"]
    assert full_only.decision == "pending_review"

    gridded = cf.ClipFilter(FakeEncoder(), crop_grid=3).check([item], policy)[0]
    nike = next(r for r in gridded.scores if r["name"] == "Nike")
    assert nike["score"] > 0.45 and nike["triggered"] and nike["crop"] == 1  # top-left tile
    assert gridded.decision == "rejected" and gridded.reasons == ["competitor:Nike"]


def test_batch_goes_through_encoder_in_one_call_and_text_is_cached() -> None:
    enc = FakeEncoder()
    flt = cf.ClipFilter(enc, crop_grid=3)
    policy = GatePolicy.from_brand(brand())
    items = [
        GateItem(1, white_with_patch(None), "mug"),
        GateItem(2, white_with_patch(GREEN), "mug"),
        GateItem(3, white_with_patch(RED), "plate"),
    ]
    decisions = flt.check(items, policy)
    assert enc.image_calls == [3 * 10]  # all crops of all images in one call
    assert [d.decision for d in decisions] == ["pending_review", "rejected", "rejected"]
    assert decisions[1].reasons == ["competitor:Globex"]
    concept_calls = len(enc.text_calls)
    flt.check(items, policy)
    # Second batch: no concept re-encoding, no product text re-encoding.
    assert len(enc.text_calls) == concept_calls
    assert enc.image_calls == [30, 30]
    # An edited policy (new threshold) is a new version: its concepts are encoded again.
    edited = brand()
    edited.safety.competitor_threshold = 0.5
    policy2 = GatePolicy.from_brand(edited)
    assert policy2.version != policy.version
    flt.check(items[:1], policy2)
    assert len(enc.text_calls) == concept_calls + 1
    assert flt.check([], policy) == []


def test_logo_reference_images(tmp_path: Path) -> None:
    logo = tmp_path / "nike.png"
    Image.new("RGB", (32, 32), RED).save(logo)
    policy = GatePolicy.from_brand(brand(logos=[str(logo)], logo_threshold=0.45))
    d = cf.ClipFilter(FakeEncoder()).check([GateItem(1, white_with_patch(RED), "mug")], policy)[0]
    row = next(r for r in d.scores if r["kind"] == "logo")
    assert row["triggered"] and "logo:Nike" in d.reasons

    missing = GatePolicy.from_brand(brand(logos=[str(tmp_path / "gone.png")]))
    with pytest.raises(GateError, match=r"gone\.png"):
        cf.ClipFilter(FakeEncoder()).check([GateItem(1, white_with_patch(None), "m")], missing)


def test_policy_from_brand() -> None:
    policy = GatePolicy.from_brand(brand())
    assert policy.version.startswith("acme:v7:")
    assert policy.competitors[0].prompts == (
        "a product with the Nike logo",
        "a product with the Nike Inc logo",
    )
    # A brand with no concepts still gets screened, with the built-in defaults.
    bare = GatePolicy.from_brand(BrandConfig(name="bare"))
    assert {c.name for c in bare.safety} >= {"nudity", "gore", "weapons", "hate_symbols"}
    assert GatePolicy.from_brand(brand()).version == policy.version  # deterministic


def test_empty_policy_only_checks_product_match() -> None:
    policy = GatePolicy.build("acme", "1", [], [], 0.3, 0.85, 0.15)
    d = cf.ClipFilter(FakeEncoder()).check([GateItem(1, white_with_patch(RED), "mug")], policy)
    assert [r["kind"] for r in d[0].scores] == ["product_match"]
    assert d[0].decision == "pending_review"


def test_crop_grid_tiles_cover_the_image() -> None:
    im = Image.new("RGB", (101, 77))
    crops = cf.crop_grid(im, 3)
    assert len(crops) == 10 and crops[0].size == (101, 77)
    assert sum(c.size[0] * c.size[1] for c in crops[1:]) == 101 * 77
    assert len(cf.crop_grid(im, 1)) == 1


# --- calibration -----------------------------------------------------------------------------


def test_threshold_for_precision() -> None:
    pos = [0.9, 0.8, 0.5, 0.3]
    neg = [0.1, 0.2, 0.4, 0.6]
    r = threshold_for_precision(pos, neg, 0.95)
    assert r["threshold"] == 0.8 and r["precision"] == 1.0 and r["recall"] == 0.5
    r = threshold_for_precision(pos, neg, 0.75)
    assert r["threshold"] == 0.5 and r["tp"] == 3 and r["fp"] == 1 and r["reached"]
    r = threshold_for_precision([0.1], [0.5, 0.9], 0.95)
    assert r["threshold"] is None and not r["reached"]


def test_calibrate_with_fake_encoder() -> None:
    flt = cf.ClipFilter(FakeEncoder(), crop_grid=3)
    policy = GatePolicy.from_brand(brand())
    rows = calibrate(
        flt,
        policy,
        {"nike": [white_with_patch(RED) for _ in range(3)]},
        [white_with_patch(None), white_with_patch(GREEN)],
        precision=0.95,
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["concept"] == "nike" and row["kind"] == "competitor" and row["reached"]
    assert row["threshold"] > 0.45 and row["recall"] == 1.0 and row["current_threshold"] == 0.3
    with pytest.raises(GateError, match="unknown concept"):
        calibrate(flt, policy, {"acme-rival": []}, [], 0.9)


# --- the tiny open_clip preset through the production loading path --------------------------


@pytest.fixture(scope="module")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    torch.set_num_threads(1)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        model_cache_dir=tmp_path_factory.mktemp("models"),
        clip_model="tiny",
        device="cpu",
    )


def test_tiny_clip_loads_from_safetensors(tiny_settings: Settings) -> None:
    from safetensors.torch import load_file

    from pipeline.gate.tiny_clip import ensure_tiny_clip

    enc = load_clip_encoder(tiny_settings)
    checkpoint = ensure_tiny_clip(tiny_settings.model_cache_dir)
    assert checkpoint.suffix == ".safetensors" and checkpoint.is_file()
    saved = load_file(checkpoint)
    loaded = enc.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)

    imgs = [white_with_patch(RED, 64), white_with_patch(None, 64)]
    a = enc.encode_images(imgs)
    t = enc.encode_texts(["a product with the Nike logo", "a mug"])
    assert a.shape == (2, 64) and t.shape == (2, 64)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    # A second load (cached checkpoint) gives the same model: same embeddings.
    again = load_clip_encoder(tiny_settings).encode_images(imgs)
    assert np.allclose(a, again, atol=1e-6)


def test_tiny_clip_runs_the_gate(tiny_settings: Settings) -> None:
    flt = cf.ClipFilter(load_clip_encoder(tiny_settings), crop_grid=2)
    policy = GatePolicy.from_brand(brand())
    decisions = flt.check([GateItem(i, white_with_patch(RED, 96), "mug") for i in range(3)], policy)
    assert len(decisions) == 3
    assert {r["kind"] for r in decisions[0].scores} == {"safety", "competitor", "product_match"}
    assert all(-1.0 <= r["score"] <= 1.0 for r in decisions[0].scores)
    assert decisions[0].clip_model.startswith("tiny-clip")


def test_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"\x80\x04not really")
    with pytest.raises(GateError, match=r"only \.safetensors"):
        load_open_clip("ViT-B-32", str(ckpt))
    with pytest.raises(GateError, match="not found"):
        load_open_clip("ViT-B-32", str(tmp_path / "missing.safetensors"))
    with pytest.raises(GateError, match="unknown open_clip architecture"):
        load_open_clip("no-such-arch", None)


def test_decisions_carry_the_full_image_embedding() -> None:
    """Issue 14: the gate keeps each image's full-image embedding for near-duplicates."""
    enc = FakeEncoder()
    policy = GatePolicy.from_brand(brand())
    images = [white_with_patch(RED), white_with_patch(None)]
    decisions = cf.ClipFilter(enc, crop_grid=3).check(
        [GateItem(i, im, "mug") for i, im in enumerate(images)], policy
    )
    for d, im in zip(decisions, images, strict=True):
        assert d.embedding is not None
        np.testing.assert_array_equal(d.embedding, FakeEncoder().encode_images([im])[0])
        assert "embedding" not in d.to_json()
