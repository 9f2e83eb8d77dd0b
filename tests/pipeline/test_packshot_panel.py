"""The contact sheet shows a packshot shot beside its catalog image, cutout outlined."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.review.contact_sheet import SheetEntry, render_grid, render_html
from pipeline.review.packshot_panel import OUTLINE, outlined_source


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


SOURCE = _png(Image.new("RGB", (64, 64), (250, 250, 250)))
_mask = Image.new("L", (64, 64), 0)
_mask.paste(255, (16, 16, 48, 48))
MASK = _png(_mask)


def test_outline_follows_the_mask_edge() -> None:
    panel = outlined_source(SOURCE, MASK, 64)
    assert panel is not None and panel.size == (64, 64)
    px = np.asarray(panel)
    red = np.all(px == OUTLINE, axis=-1)
    assert red[16, 30] and red[47, 30] and red[30, 16]  # on the edge
    assert not red[32, 32] and not red[2, 2]  # not inside, not outside
    assert outlined_source(SOURCE, None, 32) is not None  # no mask: the source alone
    assert outlined_source(None, MASK, 32) is None
    assert outlined_source(b"not an image", MASK, 32) is None


def test_sheet_shows_the_source_panel() -> None:
    shot = _png(Image.new("RGB", (64, 64), (10, 10, 10)))
    entries = [
        SheetEntry(1, "MUG", "on_white", "p", shot, source=SOURCE, mask=MASK, source_label="<x>"),
        SheetEntry(2, "TEE", "hero", "p", shot),
        SheetEntry(3, "PIL", "on_white", "p", shot, source=None, source_label="gone.png"),
    ]
    html = render_html(entries)
    assert html.count("catalog packshot, cutout outlined in red") == 1
    assert "&lt;x&gt;" in html and "<x>" not in html  # catalog text escaped
    assert "source image missing" in html
    grid = np.asarray(render_grid(entries, columns=3, thumb_px=96))
    assert np.all(grid == OUTLINE, axis=-1).any()  # the inset of shot 1
