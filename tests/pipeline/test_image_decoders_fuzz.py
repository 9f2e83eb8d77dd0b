"""One hostile image never aborts a batch (issue 24, item 11).

Every decoder entry point (the source fetch's ``decode_source``, the LoRA dataset reader,
``verify``'s ``verify_image``, ``calibrate``'s ``load_image_file``, plus ``decode_image``
and ``exif_orientation``) either returns or raises the one-line ``ImageError`` for that
image alone, whatever the bytes. Regression cases found by mutation fuzzing come first, then
a seeded, time-boxed mutation fuzz (``SHOTLINE_FUZZ_SEED``, ``SHOTLINE_FUZZ_SECONDS``).
"""

from __future__ import annotations

import io
import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.files import InputFileError
from pipeline.gate.stage import verify_image
from pipeline.images import (
    ALLOWED_FORMATS,
    ImageError,
    decode_image,
    exif_orientation,
    load_image_file,
)
from pipeline.sources.decode import decode_source
from pipeline.training import dataset

HOSTILE = Path(__file__).parent / "data" / "hostile_images"
SEED = int(os.environ.get("SHOTLINE_FUZZ_SEED", "24"))
SECONDS = float(os.environ.get("SHOTLINE_FUZZ_SECONDS", "3"))  # per entry point


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _picture(size: int = 32) -> Image.Image:
    arr = (np.arange(size * size * 3) % 251).astype(np.uint8).reshape(size, size, 3)
    return Image.fromarray(arr)


def exif_type_confused_jpeg() -> bytes:
    """A JPEG whose EXIF has PhotometricInterpretation (a SHORT) stored as ASCII text:
    ``exif_transpose`` rewrites the EXIF and fails in ``struct.pack``."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: exif_transpose must rewrite the EXIF
    exif[0x0131] = "sw"  # Software (ASCII) ...
    data = _encode(Image.new("RGB", (16, 16), "red"), "JPEG", exif=exif)
    return data.replace(b"\x01\x31\x00\x02", b"\x01\x06\x00\x02", 1)  # ... as tag 0x0106


def dds_unknown_pixel_format() -> bytes:
    """A DDS whose pixel-format flags name no format: Pillow's reader raises
    NotImplementedError (and DDS is no catalog format)."""
    data = bytearray(_encode(_picture().convert("RGBA"), "DDS"))
    data[80:84] = (0x4000).to_bytes(4, "little")  # DDS_PIXELFORMAT.dwFlags: unknown bit
    return bytes(data)


HOSTILE_CASES = {
    "avif_yuv_conversion_fails": (HOSTILE / "yuv_fails.avif").read_bytes(),  # RuntimeError
    "spider": (HOSTILE / "broken.spider").read_bytes(),  # AttributeError
    "dds_unknown_flags": dds_unknown_pixel_format(),  # NotImplementedError
    "jpeg_exif_type_confused": exif_type_confused_jpeg(),  # struct.error
}


def _through_file(tmp_path: Path, reader: Callable[[Path], object]) -> Callable[[bytes], object]:
    def call(data: bytes) -> object:
        path = tmp_path / "image.png"
        path.write_bytes(data)
        return reader(path)

    return call


def _dataset_reader(path: Path) -> object:
    problems: list[str] = []
    got = dataset._check(path, True, problems)  # the LoRA dataset's per-image reader
    if got is None:  # refused: one problem line naming the file, never an exception
        assert len(problems) == 1 and "\n" not in problems[0], problems
        assert str(path) in problems[0]
    return got


def entry_points(tmp_path: Path) -> dict[str, Callable[[bytes], object]]:
    return {
        "source fetch (decode_source)": lambda d: decode_source(d, "https://cdn/x.jpg"),
        "LoRA dataset reader": _through_file(tmp_path, _dataset_reader),
        "verify (verify_image)": verify_image,
        "calibrate (load_image_file)": _through_file(tmp_path, load_image_file),
        "decode_image": lambda d: decode_image(d, "img"),
        "exif_orientation": exif_orientation,
    }


def _call(entry: Callable[[bytes], object], data: bytes) -> None:
    """Return or raise a one-line ImageError/InputFileError; anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" and friends
        try:
            entry(data)
        except (ImageError, InputFileError) as exc:
            message = str(exc)
            assert message and "\n" not in message and "BytesIO" not in message, message


@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_hostile_images_are_one_line_image_errors(tmp_path: Path, case: str) -> None:
    data = HOSTILE_CASES[case]
    with pytest.raises(ImageError) as info:
        decode_source(data, "https://cdn.example.com/x")
    message = str(info.value)
    assert message.startswith("https://cdn.example.com/x: ") and "\n" not in message
    for name, entry in entry_points(tmp_path).items():
        try:
            _call(entry, data)
        except AssertionError:
            raise
        except Exception as exc:  # pragma: no cover - the failure message
            pytest.fail(f"{name} raised {type(exc).__name__}: {exc}")


def test_only_catalog_formats_are_decoded() -> None:
    assert set(ALLOWED_FORMATS) >= {"JPEG", "PNG", "WEBP", "GIF", "TIFF"}
    pic = _picture()
    for fmt in ALLOWED_FORMATS:
        assert decode_source(_encode(pic, fmt), fmt).width == 32
    for fmt in ("BMP", "PCX", "TGA", "PPM"):  # readable by Pillow, no catalog sends them
        with pytest.raises(ImageError, match="not a recognised image format"):
            decode_image(_encode(pic, fmt), fmt)


def test_gif_decodes_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue()).getpixel((0, 0)) == (255, 0, 0)


def _seeds() -> list[bytes]:
    pic = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = [_encode(pic, fmt) for fmt in ALLOWED_FORMATS]
    seeds += [_encode(pic, "JPEG", exif=exif), _encode(pic.convert("RGBA"), "PNG")]
    seeds += [_encode(pic.convert("I;16"), "PNG"), _encode(pic.convert("CMYK"), "TIFF")]
    return seeds + list(HOSTILE_CASES.values())


def _mutate(rng: random.Random, data: bytes) -> bytes:
    d = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        i = rng.randrange(len(d))
        if op < 0.6:
            d[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op < 0.75:
            del d[i : i + rng.randint(1, 16)]
        elif op < 0.9:
            d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            del d[max(1, i) :]  # truncated
        if not d:
            d = bytearray(data[:1])
    return bytes(d)


@pytest.mark.parametrize(
    "name",
    [
        "source fetch (decode_source)",
        "LoRA dataset reader",
        "verify (verify_image)",
        "calibrate (load_image_file)",
        "decode_image",
        "exif_orientation",
    ],
)
def test_mutation_fuzz_every_decoder_entry_point(tmp_path: Path, name: str) -> None:
    entry = entry_points(tmp_path)[name]
    rng = random.Random(f"{SEED}:{name}")
    seeds = _seeds()
    deadline = time.monotonic() + SECONDS
    tried = 0
    while time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(seeds))
        try:
            _call(entry, data)
        except AssertionError:
            raise
        except Exception as exc:
            path = tmp_path / f"crash-{tried}.bin"
            path.write_bytes(data)
            pytest.fail(f"{name} raised {type(exc).__name__}: {exc} (input kept: {path})")
        tried += 1
    assert tried > 0
