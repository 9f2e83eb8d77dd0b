"""Hostile training sets (issue 31 item 2): one clear line each, never a traceback; entries
that are not regular files are skipped with a warning that says so."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.training.dataset import DatasetError, load_dataset


def _write(root: Path, n: int = 10) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (256, 256), (i * 9 % 255, 40, 200)).save(root / f"img_{i:02d}.png")
        (root / f"img_{i:02d}.txt").write_text(f"a blue mug number {i}")


def _problems(root: Path) -> list[str]:
    with pytest.raises(DatasetError) as err:
        load_dataset(root, "sks")
    assert all("\n" not in p and "Traceback" not in p for p in err.value.problems)
    return err.value.problems


def test_metadata_line_of_100k_brackets_is_one_line(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "x.png", "text": "x"}\n' + "[" * 100_000
    )
    assert _problems(tmp_path) == [
        f"{tmp_path / 'metadata.jsonl'}:2: expected a JSON object with file_name and text strings"
    ]


def test_dds_named_png_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    buf = io.BytesIO()
    Image.new("RGBA", (256, 256)).save(buf, "DDS")
    (tmp_path / "texture.png").write_bytes(buf.getvalue())
    assert _problems(tmp_path) == [
        f"{tmp_path / 'texture.png'}: not a readable image: not a recognised image format"
    ]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
@pytest.mark.parametrize("exif", [b"XXXXXXXX", b"Exif\x00\x00not a tiff header"])
def test_exif_that_is_not_tiff_is_ignored(tmp_path: Path, fmt: str, exif: bytes) -> None:
    _write(tmp_path)
    Image.new("RGB", (300, 260)).save(tmp_path / f"odd.{fmt.lower()}", fmt, exif=exif)
    ds = load_dataset(tmp_path, "sks")
    [odd] = [i for i in ds.images if i.name.startswith("odd.")]
    assert odd.size == (300, 260) and odd.orientation == 1


def _fifo(root: Path) -> Path:
    os.mkfifo(root / "pipe.png")
    return root / "pipe.png"


def _dev_zero(root: Path) -> Path:
    (root / "zero.png").symlink_to("/dev/zero")
    return root / "zero.png"


def _loop(root: Path) -> Path:
    (root / "a.png").symlink_to(root / "b.png")
    (root / "b.png").symlink_to(root / "a.png")
    return root / "a.png"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_fifo, "not a regular file"),
        (_dev_zero, "not a regular file"),
        (_loop, "Too many levels of symbolic links"),
    ],
)
def test_non_regular_entries_skipped_with_a_warning(
    tmp_path: Path, make: object, reason: str
) -> None:
    _write(tmp_path)
    bad = make(tmp_path)  # type: ignore[operator]
    ds = load_dataset(tmp_path, "sks")
    assert len(ds.images) == 10
    said = [w for w in ds.warnings if w.startswith(f"{bad}: ")]
    assert len(said) == 1 and reason in said[0] and said[0].endswith("; skipped"), ds.warnings
