"""Loading and checking a LoRA training set: images, captions, duplicates, sizes.

A dataset is a folder of images with captions from, in order of precedence, a sidecar
``name.txt``, a ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per line) or a
``captions.csv`` (``file,caption``). Every problem is one line naming the file; any error
refuses the whole set (a model trained on half a set is worse than none), warnings do not.
Entries that are not regular files (a FIFO, a link to ``/dev/zero``, a symlink loop) are
skipped with a warning that says so.

Loading never holds the set's pixels: each file is read, hashed and checked (fully decoded
when ``decode``, else its header only) and dropped again, so memory is bounded by one image.
A ``TrainImage`` records the file, its sha256 and its (EXIF-turned) size; ``load_image``
decodes it again when training needs it, refusing a file that changed since the check.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from pipeline.digests import sha256_bytes
from pipeline.files import InputFileError, read_capped, read_text_capped, regular_file
from pipeline.images import ImageError, decode_image, exif_orientation, opened_image

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
    path: Path
    size: tuple[int, int]  # (width, height) as shown, EXIF rotation applied
    orientation: int = 1  # the EXIF orientation tag (1: none)

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
            # RecursionError: a line of 100k "[" nests deeper than the decoder recurses.
            except (ValueError, KeyError, TypeError, RecursionError):
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


@dataclass(frozen=True)
class _Checked:
    data: bytes
    size: tuple[int, int]
    orientation: int


def _check(path: Path, decode: bool, problems: list[str]) -> _Checked | None:
    """The file's bytes, shown size and orientation, if it is a usable image."""
    try:
        data = read_capped(path, MAX_IMAGE_BYTES, "image")
        if decode:
            size = decode_image(data, str(path), MAX_IMAGE_PIXELS).size
        else:
            with opened_image(data, str(path), MAX_IMAGE_PIXELS) as im:
                size = im.size
    except (InputFileError, ImageError) as exc:
        problems.append(str(exc))
        return None
    orientation = _orientation(data)
    # Phones store portrait shots landscape plus an EXIF turn; train on what people see.
    if orientation in _QUARTER_TURNS:
        size = (size[1], size[0])
    if min(size) < MIN_SIDE_PX:
        problems.append(
            f"{path}: image is {size[0]}x{size[1]} pixels; each side must be at least {MIN_SIDE_PX}"
        )
        return None
    return _Checked(data, size, orientation)


def load_image(item: TrainImage) -> Image.Image:
    """``item`` decoded to RGB with its EXIF turn applied; ``DatasetError`` (one line) if the
    file is gone, changed since the set was checked, or does not decode."""
    try:
        data = read_capped(item.path, MAX_IMAGE_BYTES, "image")
        if sha256_bytes(data) != item.sha256:
            raise DatasetError([f"{item.path}: changed since the training set was checked"])
        img = decode_image(data, str(item.path), MAX_IMAGE_PIXELS)
    except (InputFileError, ImageError) as exc:
        raise DatasetError([str(exc)]) from None
    turn = _TRANSPOSE.get(item.orientation)
    return img if turn is None else img.transpose(turn)


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
_QUARTER_TURNS = frozenset({5, 6, 7, 8})  # these swap width and height


def _orientation(data: bytes) -> int:
    return exif_orientation(data)  # the shared bounded decoder: every exception is handled


def image_files(root: Path, warnings: list[str] | None = None) -> list[Path]:
    """The regular image files in ``root``, sorted; others named like images (a FIFO, a
    device, a symlink loop, a folder) are skipped with a warning in ``warnings``."""
    out = []
    for p in sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            regular_file(p, None, "image")  # stat only: never opens a FIFO or a device
        except InputFileError as exc:
            if warnings is not None:
                warnings.append(f"{exc}; skipped")
            continue
        out.append(p)
    return out


def load_dataset(
    root: Path, trigger: str, min_images: int = MIN_IMAGES, decode: bool = True
) -> Dataset:
    """Every image under ``root`` (not recursive) with its caption; ``DatasetError`` if unusable.

    ``decode`` decodes every image once (one at a time) to refuse corrupt pixel data up front;
    without it only headers are read (for a set already checked whose digest is known).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: not a folder of training images"])
    problems: list[str] = []
    warnings: list[str] = []
    paths = image_files(root, warnings)
    if len(paths) > MAX_FILES:
        raise DatasetError([f"{root}: {len(paths)} images; at most {MAX_FILES} are allowed"])
    index = _index_captions(root, problems)
    seen: dict[str, str] = {}
    images: list[TrainImage] = []
    for path in paths:
        checked = _check(path, decode, problems)
        if checked is None:
            continue
        digest = sha256_bytes(checked.data)
        if digest in seen:
            warnings.append(f"{path}: duplicate of {seen[digest]} (same sha256); dropped")
            continue
        seen[digest] = path.name
        caption = _caption_for(path, index, problems)
        if not caption:
            warnings.append(f"{path}: no caption; using the trigger word {trigger!r} alone")
        images.append(
            TrainImage(
                path.name,
                digest,
                with_trigger(caption or "", trigger),
                path,
                checked.size,
                checked.orientation,
            )
        )
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


def target_size(item: TrainImage, resolution: int, buckets: bool) -> tuple[int, int]:
    """The size ``item`` trains at: its aspect bucket, or a ``resolution`` square."""
    if buckets:
        return bucket_size(*item.size, resolution, step=max(8, resolution // 8))
    return resolution, resolution


def prepare_one(item: TrainImage, resolution: int, buckets: bool) -> Image.Image:
    """``item`` decoded and fitted (centre crop) to its ``target_size``."""
    size = target_size(item, resolution, buckets)
    return ImageOps.fit(load_image(item), size, Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def prepare(images: Iterable[TrainImage], resolution: int, buckets: bool) -> Iterator[Image.Image]:
    """Each image at training size, decoded one at a time as the caller iterates."""
    for item in images:
        yield prepare_one(item, resolution, buckets)
