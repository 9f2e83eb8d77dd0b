"""Contact sheet rendering: self-contained, escaped, one card per image, a readable PNG grid."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
from PIL import Image

from pipeline.review.contact_sheet import (
    SheetEntry,
    render_grid,
    render_grid_png,
    render_html,
    thumbnail,
)
from tests.factories import noise_png

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _entries() -> list[SheetEntry]:
    big = io.BytesIO()
    Image.new("RGB", (600, 300), (200, 30, 30)).save(big, format="JPEG")
    return [
        SheetEntry(
            101, "SKU-1", "hero_white", "a cushion", noise_png(1), state="pending_review",
            decision="pending_review",
            scores=[{"name": "nsfw", "score": 0.05, "threshold": 0.3, "triggered": False}],
        ),
        SheetEntry(
            102, EVIL, "hero_white", EVIL, big.getvalue(), decision="rejected",
            reasons=[EVIL],
            scores=[{"name": EVIL, "score": 0.9, "threshold": 0.3, "triggered": True}],
        ),
        SheetEntry(103, "SKU-3", "lifestyle", "missing", None),
        SheetEntry(104, "SKU-4", "lifestyle", "garbage bytes", b"not an image"),
    ]  # fmt: skip


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_and_escaped() -> None:
    html = render_html(_entries())
    parser = _Tags()
    parser.feed(html)
    tags = [t for t, _ in parser.tags]
    # catalog text never becomes markup: no script, and only the two real thumbnails
    assert "script" not in tags
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) == 2
    assert all((a["src"] or "").startswith("data:image/") for a in imgs)
    assert "&lt;script&gt;" in html
    # nothing is fetched: no http(s) or protocol-relative references, strict CSP
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "default-src 'none'" in html and "img-src data:" in html
    # the ids are printed (large) on every card, including missing images
    for i in (101, 102, 103, 104):
        assert f'<div class="id">{i}</div>' in html
    assert html.count("image missing") == 2
    assert ".id { font-size: 40px" in html


def test_thumbnails_are_downscaled_never_upscaled() -> None:
    html = render_html(_entries(), thumb_px=128)
    srcs = re.findall(r'src="data:(image/\w+);base64,([^"]+)"', html)
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for _, b in srcs]
    assert sizes == [(64, 64), (128, 64)]
    assert thumbnail(noise_png(3), 256).size == (64, 64)  # type: ignore[union-attr]
    assert thumbnail(b"junk") is None


def test_png_grid_has_every_image() -> None:
    entries = _entries()
    grid = render_grid(entries, columns=2, thumb_px=64)
    assert grid.mode == "RGB"
    cols, rows = 2, 2
    assert grid.width % cols == 0 and grid.height % rows == 0
    arr = np.asarray(grid)
    cell_w, cell_h = grid.width // cols, grid.height // rows
    # the red JPEG (second entry) fills part of its cell
    second = arr[:cell_h, cell_w:]
    assert ((second[..., 0] > 150) & (second[..., 1] < 80)).sum() > 64 * 30
    # the noise thumbnail has high variance; an empty cell would not
    assert arr[:cell_h, :cell_w].std() > 40
    png = render_grid_png(entries)
    assert png.startswith(b"\x89PNG")
    assert render_grid([]).size[0] > 0  # an empty sheet still renders
