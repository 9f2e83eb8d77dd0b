"""Contact sheets for reviewers: one self-contained HTML page and one PNG grid.

Pure: entries in, ``str``/``bytes`` out; the CLI writes the files. The HTML embeds every
thumbnail as a ``data:`` URI and loads nothing else, so it opens offline, in a mail
attachment or a ticket. Its Content-Security-Policy forbids scripts and remote loads, a
second fence behind Jinja2's autoescaping: catalog text (sku, prompt, reasons) is
untrusted and must never become markup.

Each card prints the shot id large, because reviewers type it into ``shotline review
approve ID``.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment
from PIL import Image, ImageDraw, ImageFont

from pipeline.images import ImageError, decode_image
from pipeline.review.packshot_panel import outlined_source

THUMB_PX = 256


@dataclass(frozen=True)
class SheetEntry:
    """One image on the sheet. ``image`` is encoded bytes (PNG/JPEG/WebP) or None if missing."""

    shot_id: int
    sku: str
    template: str
    prompt: str
    image: bytes | None
    state: str = ""
    decision: str | None = None
    reasons: Sequence[str] = field(default_factory=tuple)
    # [{"name", "kind", "score", "threshold", "triggered"}] as the gate writes them.
    scores: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    # Packshot shots: the catalog image the product came from and its cutout mask (PNG).
    source: bytes | None = None
    mask: bytes | None = None
    source_label: str = ""


def _open(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    try:
        return decode_image(data)
    except ImageError:
        return None


def thumbnail(data: bytes | None, size: int = THUMB_PX) -> Image.Image | None:
    """An RGB thumbnail no larger than ``size`` (never upscaled), or None if undecodable."""
    img = _open(data)
    if img is None:
        return None
    img = img.convert("RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return img


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    # Small images (the tiny preset's 64 px noise) stay lossless; larger ones use JPEG so a
    # sheet of a few hundred photos stays a few MB.
    if max(img.size) <= 128:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        img.save(buf, format="JPEG", quality=85)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _fmt_score(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)


_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
  body { font: 14px/1.35 system-ui, sans-serif; margin: 16px; background: #f4f4f4; color: #111; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .note { color: #555; margin: 0 0 16px; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax({{ thumb }}px, 1fr));
          gap: 14px; }
  .card { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: 10px; }
  .card.rejected { border-color: #c62828; }
  .id { font-size: 40px; font-weight: 700; font-family: ui-monospace, monospace; }
  .thumb { width: {{ thumb }}px; height: {{ thumb }}px; object-fit: contain; background: #ddd;
           image-rendering: pixelated; display: block; }
  .missing { width: {{ thumb }}px; height: {{ thumb }}px; background: #eee; color: #900;
             display: flex; align-items: center; justify-content: center; }
  .meta { margin: 6px 0; word-break: break-word; }
  .prompt { color: #333; font-size: 12px; white-space: pre-wrap; word-break: break-word; }
  table { border-collapse: collapse; font-size: 12px; margin-top: 6px; }
  td, th { padding: 1px 6px; text-align: left; }
  tr.hit td { color: #c62828; font-weight: 600; }
  .reasons { color: #c62828; font-size: 12px; }
  figure.source { margin: 6px 0 0; }
  figure.source figcaption { font-size: 11px; color: #555; word-break: break-all; }
  .banner { background: #fff3cd; border: 2px solid #c62828; color: #7a1d1d; font-weight: 700;
            padding: 8px 12px; margin: 0 0 12px; border-radius: 6px; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
{% if banner %}<p class="banner" id="banner">{{ banner }}</p>{% endif %}
<p class="note">{{ entries|length }} image(s). {{ note }}</p>
<div class="grid">
{% for e in entries %}
  <div class="card {{ e.decision or '' }}" id="shot-{{ e.shot_id }}">
    <div class="id">{{ e.shot_id }}</div>
    {% if e.src %}
    <img class="thumb" src="{{ e.src }}" alt="shot {{ e.shot_id }}"
         width="{{ e.width }}" height="{{ e.height }}">
    {% else %}
    <div class="missing">image missing</div>
    {% endif %}
    {% if e.source_src %}
    <figure class="source">
      <img class="thumb" src="{{ e.source_src }}" alt="source of shot {{ e.shot_id }}"
           width="{{ e.source_w }}" height="{{ e.source_h }}">
      <figcaption>catalog packshot, cutout outlined in red: {{ e.source_label }}</figcaption>
    </figure>
    {% elif e.is_packshot %}
    <div class="missing">source image missing</div>
    {% endif %}
    <div class="meta"><b>{{ e.sku }}</b> · {{ e.template }}
      {% if e.state %}· {{ e.state }}{% endif %}</div>
    <div class="prompt">{{ e.prompt }}</div>
    {% if e.scores %}
    <table>
      <tr><th>score</th><th>value</th><th>threshold</th></tr>
      {% for s in e.scores %}
      <tr class="{{ 'hit' if s.triggered else '' }}">
        <td>{{ s.name }}</td><td>{{ s.score }}</td><td>{{ s.threshold }}</td></tr>
      {% endfor %}
    </table>
    {% endif %}
    {% if e.reasons %}<div class="reasons">{{ e.reasons|join('; ') }}</div>{% endif %}
  </div>
{% endfor %}
</div>
</body>
</html>
"""

# autoescape=True for every variable: the catalog is untrusted input.
_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_TEMPLATE = _ENV.from_string(_HTML)

DEFAULT_NOTE = (
    "Type an id into `shotline review approve ID` or `shotline review reject ID --reason TEXT`."
)


def render_html(
    entries: Sequence[SheetEntry],
    title: str = "shotline contact sheet",
    note: str = DEFAULT_NOTE,
    thumb_px: int = THUMB_PX,
    banner: str | None = None,
) -> str:
    """The contact sheet as one self-contained HTML page; ``banner`` is a warning shown on top."""
    cards = []
    for e in entries:
        thumb = thumbnail(e.image, thumb_px)
        panel = outlined_source(e.source, e.mask, thumb_px)
        cards.append(
            {
                "shot_id": int(e.shot_id),
                "sku": e.sku,
                "template": e.template,
                "prompt": e.prompt,
                "state": e.state,
                "decision": e.decision if e.decision in ("rejected", "pending_review") else "",
                "reasons": [str(r) for r in e.reasons],
                "scores": [
                    {
                        "name": str(s.get("name", "")),
                        "score": _fmt_score(s.get("score")),
                        "threshold": _fmt_score(s.get("threshold")),
                        "triggered": bool(s.get("triggered")),
                    }
                    for s in e.scores
                ],
                "src": _data_uri(thumb) if thumb is not None else None,
                "width": thumb.width if thumb is not None else 0,
                "height": thumb.height if thumb is not None else 0,
                "is_packshot": bool(e.source_label),
                "source_label": e.source_label,
                "source_src": _data_uri(panel) if panel is not None else None,
                "source_w": panel.width if panel is not None else 0,
                "source_h": panel.height if panel is not None else 0,
            }
        )
    return _TEMPLATE.render(title=title, note=note, entries=cards, thumb=thumb_px, banner=banner)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow >= 10.1 bundles a scalable default font; no system fonts needed.
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` or its longest prefix + "…" that fits ``width`` pixels.

    Binary search on the cut point: O(n log n) measuring, where trimming one character
    at a time was quadratic (a 10,000-character SKU took minutes). No glyph is narrower
    than a quarter pixel, so text beyond ``4 * width`` characters can never show.
    """
    limit = 4 * width + 16
    if len(text) <= limit and draw.textlength(text, font=font) <= width:
        return text
    text = text[:limit]
    lo, hi = 0, len(text)  # the longest fitting prefix length lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid] + "…", font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def render_grid(
    entries: Sequence[SheetEntry],
    columns: int | None = None,
    thumb_px: int = THUMB_PX,
    banner: str | None = None,
) -> Image.Image:
    """The same images as a PNG-able grid: each cell has the id large, then sku and template.
    ``banner`` is printed across the top (the PNG travels alone into chats and tickets)."""
    n = max(len(entries), 1)
    cols = columns or min(n, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    pad, id_h, line_h = 8, max(24, thumb_px // 6), max(12, thumb_px // 16)
    cell_w, cell_h = thumb_px + 2 * pad, thumb_px + id_h + 2 * line_h + 3 * pad
    top = 0
    if banner:
        banner_font = _font(max(14, line_h + 4))
        wrapped = textwrap.wrap(banner, width=max(20, (cols * cell_w) // max(8, line_h // 2 + 6)))
        top = (len(wrapped) + 1) * (max(14, line_h + 4) + 4)
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h + top), "white")
    draw = ImageDraw.Draw(sheet)
    if banner:
        draw.rectangle((0, 0, sheet.width - 1, top - 4), fill="#fff3cd", outline="#c62828")
        for j, line in enumerate(wrapped):
            y = pad + j * (max(14, line_h + 4) + 4)
            draw.text((pad, y), line, fill="#7a1d1d", font=banner_font)
    id_font, text_font = _font(id_h), _font(line_h)
    for i, e in enumerate(entries):
        x0, y0 = (i % cols) * cell_w + pad, (i // cols) * cell_h + pad + top
        draw.text((x0, y0), str(int(e.shot_id)), fill="black", font=id_font)
        ty = y0 + id_h + pad // 2
        thumb = thumbnail(e.image, thumb_px)
        if thumb is None:
            draw.rectangle((x0, ty, x0 + thumb_px - 1, ty + thumb_px - 1), outline="red")
            draw.text((x0 + pad, ty + pad), "image missing", fill="red", font=text_font)
        else:
            if max(thumb.size) < thumb_px:
                # Upscale small (tiny preset) images with hard edges so they stay visible.
                scale = thumb_px / max(thumb.size)
                size = (max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale)))
                thumb = thumb.resize(size, Image.Resampling.NEAREST)
            sheet.paste(thumb, (x0, ty))
        _paste_inset(sheet, e, (x0, ty), thumb_px)
        my = ty + thumb_px + pad // 2
        border = "red" if e.decision == "rejected" else "black"
        draw.text((x0, my), _fit(draw, e.sku, text_font, thumb_px), fill=border, font=text_font)
        draw.text(
            (x0, my + line_h),
            _fit(draw, e.template, text_font, thumb_px),
            fill="gray",
            font=text_font,
        )
    return sheet


def _paste_inset(sheet: Image.Image, e: SheetEntry, at: tuple[int, int], thumb_px: int) -> None:
    """A packshot shot's source (cutout outlined) as an inset in the cell's corner."""
    inset = outlined_source(e.source, e.mask, max(16, thumb_px // 3))
    if inset is None:
        return
    x = at[0] + thumb_px - inset.width - 2
    y = at[1] + thumb_px - inset.height - 2
    ImageDraw.Draw(sheet).rectangle(
        (x - 2, y - 2, x + inset.width + 1, y + inset.height + 1), outline="white", width=2
    )
    sheet.paste(inset, (x, y))


def render_grid_png(
    entries: Sequence[SheetEntry],
    columns: int | None = None,
    thumb_px: int = THUMB_PX,
    banner: str | None = None,
) -> bytes:
    buf = io.BytesIO()
    render_grid(entries, columns, thumb_px, banner).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
