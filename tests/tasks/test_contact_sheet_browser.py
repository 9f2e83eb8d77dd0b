"""The contact sheet in a real browser: headless Chromium (Debian ``chromium``), offline.

A wrapper page loads the sheet in an iframe (``--allow-file-access-from-files`` makes the two
file:// pages same-origin) and reports, from the sheet's own DOM: how many thumbnails there
are, how many decoded (``naturalWidth > 0``), which resources the sheet fetched, and whether
any script exists. The sheet itself stays unmodified: its CSP forbids scripts. A negative
control proves the probe notices a remote image. Chromium gets a dead proxy, so any network
fetch would fail rather than reach anything.

Install: ``apt-get update && apt-get install -y chromium``.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.review.contact_sheet import SheetEntry, render_html
from tests.factories import noise_png

EVIL = '<script>document.title="pwned"</script><img src=http://127.0.0.1:9/x.png>'

PROBE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="sheet" src="%s" width="1200" height="900"></iframe>
<script>
window.addEventListener("load", function () {
  var out = {};
  var doc = document.getElementById("sheet").contentDocument;
  if (!doc) { out.error = "sheet not readable"; } else {
    var imgs = Array.prototype.slice.call(doc.images);
    out.title = doc.title;
    out.images = imgs.length;
    out.rendered = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    out.resources = doc.defaultView.performance.getEntriesByType("resource")
      .map(function (r) { return r.name; });
    out.scripts = doc.scripts.length;
    out.ids = Array.prototype.map.call(doc.querySelectorAll(".id"),
      function (e) { return e.textContent; });
    out.prompts = Array.prototype.map.call(doc.querySelectorAll(".prompt"),
      function (e) { return e.textContent; });
  }
  document.getElementById("result").textContent = JSON.stringify(out);
});
</script></body></html>
"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is required: apt-get update && apt-get install -y chromium")


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        # A dead proxy: if the page tried to fetch anything remote, it would fail.
        "--proxy-server=http://127.0.0.1:9",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def probe(tmp: Path, sheet: Path) -> dict[str, Any]:
    wrapper = tmp / "probe.html"
    wrapper.write_text(PROBE % sheet.as_uri(), encoding="utf-8")
    res = run_chromium(
        tmp,
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
        wrapper.as_uri(),
    )
    match = re.search(r'<pre id="result">(.*?)</pre>', res.stdout, re.S)
    assert match, f"no probe result (rc {res.returncode}): {res.stdout[-500:]} {res.stderr[-2000:]}"
    text = match.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return dict(json.loads(text))


def entries() -> list[SheetEntry]:
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(
        big, format="PNG"
    )
    out = [
        SheetEntry(
            shot_id=1000 + i,
            sku=f"SKU-{i}",
            template="hero_white",
            prompt=f"studio product photo {i}",
            image=noise_png(i),
            state="pending_review",
            decision="pending_review",
            scores=[{"name": "nsfw", "score": 0.01 * i, "threshold": 0.3, "triggered": False}],
        )
        for i in range(5)
    ]
    out.append(
        SheetEntry(
            1005, EVIL, "lifestyle", EVIL, big.getvalue(), decision="rejected", reasons=[EVIL]
        )
    )
    return out


def test_sheet_loads_offline_and_every_thumbnail_renders(tmp_path: Path) -> None:
    sheet = tmp_path / "contact-sheet.html"
    sheet.write_text(render_html(entries()), encoding="utf-8")
    result = probe(tmp_path, sheet)
    assert "error" not in result, result
    assert result["images"] == 6
    assert result["rendered"] == 6
    assert result["resources"] == []  # data: URIs only; nothing was fetched
    assert result["scripts"] == 0
    assert result["title"] == "shotline contact sheet"  # the injected script did not run
    assert result["ids"] == [str(1000 + i) for i in range(6)]
    assert result["prompts"][-1] == EVIL  # shown as text, not markup


def test_probe_notices_a_remote_image(tmp_path: Path) -> None:
    """Negative control: a page with a remote image fails the checks above."""
    html = render_html(entries()[:1]).replace(
        "</body>", '<img src="http://127.0.0.1:9/remote.png"></body>'
    )
    sheet = tmp_path / "bad.html"
    sheet.write_text(html, encoding="utf-8")
    result = probe(tmp_path, sheet)
    assert result["images"] == 2
    assert result["rendered"] == 1


def test_screenshot_is_not_blank(tmp_path: Path) -> None:
    sheet = tmp_path / "contact-sheet.html"
    sheet.write_text(render_html(entries()), encoding="utf-8")
    shot = tmp_path / "screenshot.png"
    res = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", sheet.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    arr = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert arr.shape == (900, 1200, 3)
    assert arr.std() > 30  # a blank (single colour) page has ~0
    # noise thumbnails: many distinct colours, which text on a plain background never has
    colours = np.unique(arr.reshape(-1, 3).astype(np.uint8), axis=0)
    assert len(colours) > 5000

    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>", encoding="utf-8")
    blank_shot = tmp_path / "blank.png"
    run_chromium(tmp_path, f"--screenshot={blank_shot}", "--window-size=1200,900", blank.as_uri())
    assert np.asarray(Image.open(blank_shot).convert("RGB"), dtype=np.float64).std() < 1
