"""Hostile inputs cost bounded time and memory, and fail with one line naming the input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipeline.brand.config import BrandConfigError
from pipeline.brand.loader import load_brand
from pipeline.brand.sanitize import Sanitizer
from pipeline.gate.policy import GateError
from pipeline.gate.scores import _load_logo
from pipeline.gate.stage import verify_image
from pipeline.generate.lora import LoraError, verify_adapter
from pipeline.generate.modelspec import ModelLoadError, ModelSpec, load_pipeline
from pipeline.images import ImageError, decode_image, load_image_file
from pipeline.review.contact_sheet import SheetEntry, render_grid
from pipeline.review.imagediff import pixel_difference
from pipeline.settings import Settings
from pipeline.storage import check_key, content_key, sanitize_part
from pipeline.types import AdapterRef
from pipeline.weights import check_safetensors
from tests.factories import noise_png

MINIMAL = """\
name: demo
templates:
  hero:
    prompt: "photo of {{ product.title }}"
"""


def _safetensors(data: bytes = b"\0" * 16) -> bytes:
    header = json.dumps(
        {"w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}
    )
    return len(header).to_bytes(8, "little") + header.encode() + data


def _ref(path: str, sha256: str) -> AdapterRef:
    return AdapterRef(name="style", sha256=sha256, weight=1.0, uri=path)


def _in_time(fn: Callable[[], object], seconds: float = 10) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it blocks. Returns what it raised."""
    out: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # handed back to the test
            out[0] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked or ran too long"
    return out[0]


# --- images ------------------------------------------------------------------------------


def _bomb_png(side: int = 8000) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")  # ~8 MB to make, a few KB encoded
    return buf.getvalue()


def test_image_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    bomb = _bomb_png()
    assert len(bomb) < 200_000
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"8000x8000 pixels; the limit is 16\.8 megapixels"):
        verify_image(bomb)
    with pytest.raises(ImageError, match=r"^rival\.png: image is 8000x8000"):
        decode_image(bomb, "rival.png")
    with pytest.raises(ImageError, match=r"^recorded image: image is 8000x8000"):
        pixel_difference(bomb, noise_png())
    (tmp_path / "logo.png").write_bytes(bomb)
    with pytest.raises(GateError, match=r"logo\.png: image is 8000x8000"):
        _load_logo(str(tmp_path / "logo.png"), "acme", "rival")
    assert time.monotonic() - start < 10
    # The cap is the caller's: a larger one decodes (here: a small image under a small cap).
    assert decode_image(noise_png(size=64), max_pixels=64 * 64).size == (64, 64)
    with pytest.raises(ImageError):
        decode_image(noise_png(size=64), max_pixels=64 * 63)


def test_image_errors_name_the_image_not_a_bytesio(tmp_path: Path) -> None:
    messages = []
    for call in (
        lambda: verify_image(b"junk"),
        lambda: decode_image(b"junk", "shot 7"),
        lambda: pixel_difference(noise_png(), b"junk"),
        lambda: decode_image(noise_png()[:200], "cut.png"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        messages.append(str(info.value))
    assert all("BytesIO" not in m and "0x" not in m for m in messages), messages
    assert messages[0] == "not a readable image: not a recognised image format"
    assert messages[1].startswith("shot 7: not a readable image")
    assert messages[2].startswith("reproduced image: not a readable image")
    assert messages[3].startswith("cut.png: not a readable image")


def test_image_files_are_read_bounded(tmp_path: Path) -> None:
    fifo = tmp_path / "logo.png"
    os.mkfifo(fifo)
    exc = _in_time(lambda: _load_logo(str(fifo), "acme", "rival"))
    assert isinstance(exc, GateError) and "logo.png: image: not a regular file" in str(exc)
    exc = _in_time(lambda: load_image_file("/dev/zero"))
    assert isinstance(exc, ValueError) and "not a regular file" in str(exc)
    big = tmp_path / "big.png"
    with big.open("wb") as fh:
        fh.truncate(200 << 20)
    exc = _in_time(lambda: load_image_file(big))
    assert isinstance(exc, ValueError) and "big.png: image: file is 200.0 MiB" in str(exc)


# --- safetensors weights -------------------------------------------------------------------


def test_junk_lora_with_a_matching_pin_is_refused_before_loading(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(1 << 20))
    ref = _ref(str(junk), hashlib.sha256(junk.read_bytes()).hexdigest())
    with pytest.raises(LoraError, match=r"junk\.safetensors: LoRA 'style': not a safetensors"):
        verify_adapter(ref)
    renamed = tmp_path / "pickled.safetensors"
    renamed.write_bytes(pickle.dumps({"w": [1.0] * 100}))
    ref = _ref(str(renamed), hashlib.sha256(renamed.read_bytes()).hexdigest())
    with pytest.raises(LoraError, match="pickle or other format renamed"):
        verify_adapter(ref)
    good = tmp_path / "good.safetensors"
    good.write_bytes(_safetensors())
    assert verify_adapter(_ref(str(good), hashlib.sha256(_safetensors()).hexdigest()))


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 999]}}, "outside the file"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, "does not match"),
        ({"w": {"dtype": "PY", "shape": [16], "data_offsets": [0, 16]}}, "unknown dtype"),
        ({"w": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 16]}}, "bad shape"),
        ({"__metadata__": {"a": 1}}, "__metadata__"),
        ({}, "holds no tensors"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_safetensors_header_is_checked(tmp_path: Path, header: object, problem: str) -> None:
    raw = json.dumps(header).encode()
    f = tmp_path / "w.safetensors"
    f.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 16)
    with pytest.raises(ValueError, match=problem):
        check_safetensors(f)


def test_pickle_renamed_checkpoint_is_refused_before_loading(
    tmp_path: Path, tmp_settings: Settings
) -> None:
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(pickle.dumps({"state_dict": {}}))
    spec = ModelSpec.parse(str(ckpt), tmp_settings)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: checkpoint: not a safetensors"):
        load_pipeline(spec, tmp_settings)


# --- brand configs -----------------------------------------------------------------------


@pytest.mark.parametrize("invisible", ["\u200b", "\u2060", "\ufeff\u200d"])
def test_invisible_terms_are_refused_naming_the_field(tmp_path: Path, invisible: str) -> None:
    text = MINIMAL + (
        f"competitors:\n  - {{name: Rival, aliases: ['{invisible}']}}\n"
        f"  - {{name: '{invisible}'}}\n"
        f"blocked_terms: ['{invisible}']\n"
    )
    (tmp_path / "demo.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(BrandConfigError) as info:
        load_brand(tmp_path / "demo.yaml")
    fields = sorted(p.field for p in info.value.items)
    assert fields == ["blocked_terms[0]", "competitors[0].aliases[0]", "competitors[1].name"]
    assert all("empty once invisible characters are removed" in p.message for p in info.value.items)
    # The sanitizer never matches the empty string, even for a config nobody checked.
    s = Sanitizer(competitors=[("Rival", [invisible])], blocked=[invisible])
    assert s.clean("C++ and Rival mugs").text == "C++ and mugs"


@pytest.mark.parametrize(
    "uri", ["http://cdn.example.com/a.safetensors", "s3://bucket/a.safetensors"]
)
def test_remote_lora_paths_are_problems(tmp_path: Path, uri: str) -> None:
    text = MINIMAL + f"loras:\n  - {{name: a, path: '{uri}', sha256: {'ab' * 32}}}\n"
    (tmp_path / "demo.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(BrandConfigError) as info:
        load_brand(tmp_path / "demo.yaml")
    [problem] = info.value.items
    assert problem.field == "loras[0].path" and problem.line == 6
    assert "must be a local file" in problem.message


def test_pickle_renamed_lora_and_checkpoint_are_problems(tmp_path: Path) -> None:
    data = pickle.dumps({"w": 1})
    (tmp_path / "a.safetensors").write_bytes(data)
    (tmp_path / "base.safetensors").write_bytes(data)
    pin = hashlib.sha256(data).hexdigest()
    text = MINIMAL.replace("name: demo\n", "name: demo\nbase_model: ./base.safetensors\n") + (
        f"loras:\n  - {{name: a, path: a.safetensors, sha256: {pin}}}\n"
    )
    (tmp_path / "demo.yaml").write_text(text, encoding="utf-8")
    cfg = load_brand(tmp_path / "demo.yaml")
    problems = cfg.pin_problems()
    assert [loc for loc, _ in problems] == [("base_model",), ("loras", 0, "path")]
    assert all("not a safetensors file" in msg for _, msg in problems)


def test_brand_file_reads_are_bounded(tmp_path: Path) -> None:
    fifo = tmp_path / "demo.yaml"
    os.mkfifo(fifo)
    exc = _in_time(lambda: load_brand(fifo))
    assert isinstance(exc, BrandConfigError) and "not a regular file" in str(exc)
    big = tmp_path / "big.yaml"
    big.write_text("name: demo\n" + "# filler\n" * 200_000, encoding="utf-8")
    with pytest.raises(BrandConfigError, match=r"big\.yaml: file is 1\.7 MiB"):
        load_brand(big)
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(MINIMAL + laughs, encoding="utf-8")
    start = time.monotonic()
    with pytest.raises(BrandConfigError, match="once aliases are expanded"):
        load_brand(bomb)
    assert time.monotonic() - start < 10


# --- blob keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sku", ["CON", "aux", "Com1", "LPT1", "nul", "PRN", "con.txt", "AUX.tar.gz", "lpt9.png"]
)
def test_windows_device_names_are_escaped(sku: str) -> None:
    part = sanitize_part(sku)
    assert part != sku and part.startswith("_")
    key = content_key("raw", sku, sha256="0" * 64, ext="png")
    assert check_key(key).split("/")[1] == part


@pytest.mark.parametrize("sku", ["sku.", "sku..", "a. "])
def test_trailing_dots_and_spaces_are_escaped(sku: str) -> None:
    part = sanitize_part(sku)
    assert not part.endswith((".", " ")) and part != sanitize_part(sku.rstrip(". "))


def test_ordinary_names_are_kept() -> None:
    for name in ("console", "COM10", "auxiliary", "nullable", "SKU-1.v2", "con_1"):
        assert sanitize_part(name) == name


# --- contact sheet ------------------------------------------------------------------------


def test_contact_sheet_label_fitting_is_fast_for_huge_labels() -> None:
    entries = [
        SheetEntry(shot_id=1, sku="W" * 10_000, template="t" * 10_000, prompt="", image=None),
        SheetEntry(shot_id=2, sku="short", template="hero", prompt="", image=noise_png()),
    ]
    start = time.monotonic()
    render_grid(entries)
    assert time.monotonic() - start < 5
