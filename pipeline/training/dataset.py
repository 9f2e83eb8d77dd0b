"""Loading and checking a LoRA training set: images, captions, duplicates, sizes.

A dataset is a folder of images with captions from, in order of precedence, a sidecar
``name.txt``, a ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per line) or a
``captions.csv`` (``file,caption``). Every problem is one line naming the file; any error
refuses the whole set (a model trained on half a set is worse than none), warnings do not.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from pipeline.digests import sha256_bytes
from pipeline.files import InputFileError, read_capped, read_text_capped
from pipeline.images import ImageError, decode_image, exif_orientation

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
MIN_SIDE_PX = 256
MIN_IMAGES = 10
WARN_IMAGES = 50
MAX_IMAGE_BYTES = 32 << 20
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_CAPTION_BYTES = 64 << 10
MAX_INDEX_BYTES = 16 << 20
MAX_FILES = 10_000


class DatasetError(ValueError):
    """A training set that must not be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class TrainImage:
    name: str  # file name inside the dataset folder
    sha256: str  # of the file's bytes
    caption: str
    image: Image.Image  # decoded RGB, EXIF rotation applied

    @property
    def caption_sha256(self) -> str:
        return sha256_bytes(self.caption.encode())


@dataclass
class Dataset:
    images: list[TrainImage]
    warnings: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[dict[str, str]]:
        return [
            {"file": i.name, "sha256": i.sha256, "caption_sha256": i.caption_sha256}
            for i in self.images
        ]

    @property
    def digest(self) -> str:
        """Sorted (image sha256, caption sha256) pairs: the same set gives the same digest."""
        pairs = sorted(f"{i.sha256}:{i.caption_sha256}" for i in self.images)
        return sha256_bytes("\n".join(pairs).encode())


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


def _index_captions(root: Path, problems: list[str]) -> dict[str, str]:
    """Captions from ``metadata.jsonl`` and ``captions.csv`` (sidecars are read per image)."""
    out: dict[str, str] = {}
    csv_path = root / "captions.csv"
    if csv_path.exists():
        try:
            text = read_text_capped(csv_path, MAX_INDEX_BYTES, "captions")
        except InputFileError as exc:
            problems.append(str(exc))
            return out
        for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
            if not row or (
                lineno == 1 and [c.strip().lower() for c in row[:2]] == ["file", "caption"]
            ):
                continue
            if len(row) < 2:
                problems.append(f"{csv_path}:{lineno}: expected file,caption")
                continue
            out[row[0].strip()] = _clean_caption(row[1])
    meta_path = root / "metadata.jsonl"
    if meta_path.exists():
        try:
            text = read_text_capped(meta_path, MAX_INDEX_BYTES, "metadata")
        except InputFileError as exc:
            problems.append(str(exc))
            return out
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                name, caption = rec["file_name"], rec["text"]
                if not isinstance(name, str) or not isinstance(caption, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                problems.append(
                    f"{meta_path}:{lineno}: expected a JSON object with file_name and text strings"
                )
                continue
            out[name.strip()] = _clean_caption(caption)
    return out


def with_trigger(caption: str, trigger: str) -> str:
    """``caption`` with the trigger word first unless it already contains it."""
    if not caption:
        return trigger
    if trigger.lower() in caption.lower().split() or trigger.lower() in caption.lower():
        return caption
    return f"{trigger}, {caption}"


def _caption_for(path: Path, index: dict[str, str], problems: list[str]) -> str | None:
    sidecar = path.with_suffix(".txt")
    if sidecar.exists():
        try:
            return _clean_caption(read_text_capped(sidecar, MAX_CAPTION_BYTES, "caption"))
        except InputFileError as exc:
            problems.append(str(exc))
            return None
    return index.get(path.name)


def _decode(path: Path, problems: list[str]) -> tuple[bytes, Image.Image] | None:
    try:
        data = read_capped(path, MAX_IMAGE_BYTES, "image")
        img = decode_image(data, str(path), MAX_IMAGE_PIXELS)
    except (InputFileError, ImageError) as exc:
        problems.append(str(exc))
        return None
    # Phones store portrait shots landscape plus an EXIF turn; train on what people see.
    turn = _TRANSPOSE.get(_orientation(data))
    if turn is not None:
        img = img.transpose(turn)
    if min(img.size) < MIN_SIDE_PX:
        problems.append(
            f"{path}: image is {img.size[0]}x{img.size[1]} pixels; each side must be at least "
            f"{MIN_SIDE_PX}"
        )
        return None
    return data, img


_T = Image.Transpose
# EXIF orientation tag value -> the transpose that undoes it (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: _T.FLIP_LEFT_RIGHT,
    3: _T.ROTATE_180,
    4: _T.FLIP_TOP_BOTTOM,
    5: _T.TRANSPOSE,
    6: _T.ROTATE_270,
    7: _T.TRANSVERSE,
    8: _T.ROTATE_90,
}


def _orientation(data: bytes) -> int:
    return exif_orientation(data)  # the shared bounded decoder: every exception is handled


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_dataset(root: Path, trigger: str, min_images: int = MIN_IMAGES) -> Dataset:
    """Every image under ``root`` (not recursive) with its caption; ``DatasetError`` if unusable."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: not a folder of training images"])
    problems: list[str] = []
    warnings: list[str] = []
    paths = image_files(root)
    if len(paths) > MAX_FILES:
        raise DatasetError([f"{root}: {len(paths)} images; at most {MAX_FILES} are allowed"])
    index = _index_captions(root, problems)
    seen: dict[str, str] = {}
    images: list[TrainImage] = []
    for path in paths:
        decoded = _decode(path, problems)
        if decoded is None:
            continue
        data, img = decoded
        digest = sha256_bytes(data)
        if digest in seen:
            warnings.append(f"{path}: duplicate of {seen[digest]} (same sha256); dropped")
            continue
        seen[digest] = path.name
        caption = _caption_for(path, index, problems)
        if not caption:
            warnings.append(f"{path}: no caption; using the trigger word {trigger!r} alone")
        images.append(TrainImage(path.name, digest, with_trigger(caption or "", trigger), img))
    if not problems and len(images) < min_images:
        problems.append(
            f"{root}: {len(images)} usable images; at least {min_images} are needed to train"
        )
    if problems:
        raise DatasetError(problems)
    if len(images) < WARN_IMAGES:
        warnings.append(f"{root}: only {len(images)} images; 50 or more train a steadier adapter")
    return Dataset(images, warnings)


def centre_crop(img: Image.Image, size: int) -> Image.Image:
    """The largest centred square, resized to ``size`` x ``size``."""
    return ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def bucket_size(width: int, height: int, resolution: int, step: int = 64) -> tuple[int, int]:
    """An aspect-ratio bucket: about ``resolution``² pixels, sides multiples of ``step``."""
    aspect = width / height
    area = resolution * resolution
    w = max(step, round((area * aspect) ** 0.5 / step) * step)
    h = max(step, round((area / aspect) ** 0.5 / step) * step)
    return w, h


def prepare(images: Iterable[TrainImage], resolution: int, buckets: bool) -> list[Image.Image]:
    """Each image at training size: its aspect bucket, or a centre crop to a square."""
    out = []
    for item in images:
        if buckets:
            size = bucket_size(*item.image.size, resolution, step=max(8, resolution // 8))
            out.append(ImageOps.fit(item.image, size, Image.Resampling.LANCZOS))
        else:
            out.append(centre_crop(item.image, resolution))
    return out
