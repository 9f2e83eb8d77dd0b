"""Dataset loading: every problem one line naming the file; warnings don't refuse the set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline.training.dataset import (
    DatasetError,
    bucket_size,
    load_dataset,
    load_image,
    prepare,
    with_trigger,
)


def _write(root: Path, n: int, size: tuple[int, int] = (256, 256), captions: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (i * 9 % 255, 40, 200)).save(root / f"img_{i:02d}.png")
        if captions:
            (root / f"img_{i:02d}.txt").write_text(f"a blue mug number {i}")


def test_good_set_prepends_trigger_and_warns_under_50(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    ds = load_dataset(tmp_path, "sks")
    assert len(ds.images) == 10
    assert ds.images[0].caption == "sks, a blue mug number 0"
    assert any("only 10 images" in w for w in ds.warnings)
    assert len(ds.digest) == 64


def test_digest_depends_on_captions(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    before = load_dataset(tmp_path, "sks").digest
    (tmp_path / "img_03.txt").write_text("another caption")
    assert load_dataset(tmp_path, "sks").digest != before


def test_duplicates_dropped_with_a_warning(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    (tmp_path / "zcopy.png").write_bytes((tmp_path / "img_04.png").read_bytes())
    ds = load_dataset(tmp_path, "sks")
    assert len(ds.images) == 10
    assert any("zcopy.png: duplicate of img_04.png" in w for w in ds.warnings)


def test_missing_caption_falls_back_to_trigger(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    (tmp_path / "img_02.txt").unlink()
    ds = load_dataset(tmp_path, "sks")
    assert [i.caption for i in ds.images if i.name == "img_02.png"] == ["sks"]
    assert any("img_02.png: no caption" in w for w in ds.warnings)


def test_metadata_jsonl_and_csv_captions(tmp_path: Path) -> None:
    _write(tmp_path, 10, captions=False)
    lines = [
        json.dumps({"file_name": f"img_{i:02d}.png", "text": f"sks mug {i}"}) for i in range(5)
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines))
    csv_rows = ["file,caption"] + [f"img_{i:02d}.png,red mug {i}" for i in range(5, 10)]
    (tmp_path / "captions.csv").write_text("\n".join(csv_rows))
    caps = {i.name: i.caption for i in load_dataset(tmp_path, "sks").images}
    assert caps["img_01.png"] == "sks mug 1"  # already has the trigger
    assert caps["img_07.png"] == "sks, red mug 7"


def test_bad_metadata_line_named(tmp_path: Path) -> None:
    _write(tmp_path, 10, captions=False)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "img_00.png", "text": "x"}\nnot json\n')
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path, "sks")
    assert err.value.problems == [
        f"{tmp_path / 'metadata.jsonl'}:2: expected a JSON object with file_name and text strings"
    ]


def test_every_problem_one_line(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (300, 200)).save(tmp_path / "small.jpg")
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path, "sks")
    problems = err.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{tmp_path / 'broken.png'}: not a readable image")
    assert problems[1] == (
        f"{tmp_path / 'small.jpg'}: image is 300x200 pixels; each side must be at least 256"
    )
    assert all("\n" not in p for p in problems)


def test_too_few_images_refused(tmp_path: Path) -> None:
    _write(tmp_path, 9)
    with pytest.raises(DatasetError, match="9 usable images; at least 10"):
        load_dataset(tmp_path, "sks")


def test_exif_rotation_applied(tmp_path: Path) -> None:
    _write(tmp_path, 9)
    img = Image.new("RGB", (400, 300), (10, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    img.save(tmp_path / "phone.jpg", exif=exif)
    ds = load_dataset(tmp_path, "sks")
    [phone] = [i for i in ds.images if i.name == "phone.jpg"]
    assert phone.size == (300, 400)
    assert load_image(phone).size == (300, 400)


def test_buckets_and_crop(tmp_path: Path) -> None:
    _write(tmp_path, 9)
    Image.new("RGB", (512, 256)).save(tmp_path / "wide.png")
    ds = load_dataset(tmp_path, "sks")
    sizes = {im.size for im in prepare(ds.images, 64, buckets=False)}
    assert sizes == {(64, 64)}
    bucketed = {im.size for im in prepare(ds.images, 64, buckets=True)}
    assert bucketed == {(64, 64), bucket_size(512, 256, 64, step=8)}
    assert bucket_size(512, 256, 64, step=8) == (88, 48)


def test_with_trigger() -> None:
    assert with_trigger("", "sks") == "sks"
    assert with_trigger("a SKS mug", "sks") == "a SKS mug"
    assert with_trigger("a mug", "sks") == "sks, a mug"
