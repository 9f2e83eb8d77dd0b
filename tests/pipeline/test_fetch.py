"""The fetch stage against a real loopback HTTP server (allowed explicitly), local files
under roots, and the decode: every refusal is one line that names the URL."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipeline.images import ImageError
from pipeline.sources.decode import decode_source
from pipeline.sources.fetch import FetchError, FetchPolicy, fetch
from tests.image_server import PNG, image_server


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with image_server() as url:
        yield url


@pytest.fixture
def policy(tmp_path: Path) -> FetchPolicy:
    return FetchPolicy(
        roots=(Path(os.path.realpath(tmp_path / "root")),),
        allow_hosts=("127.0.0.1",),
        max_bytes=4096,
        connect_timeout_s=1.0,
        read_timeout_s=0.5,
        total_timeout_s=1.0,
        max_redirects=3,
    )


def test_http_ok_and_not_modified(server: str, policy: FetchPolicy) -> None:
    got = fetch(f"{server}/ok.png", policy)
    assert got.data == PNG and got.content_type == "image/png" and got.etag == "v1"
    again = fetch(f"{server}/ok.png", policy, etag="v1")
    assert again.not_modified
    hop = fetch(f"{server}/hop", policy)
    assert hop.data == PNG and hop.final_url == f"{server}/ok.png"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.png", "HTTP 404"),
        ("/slow", "timed out"),
        ("/drip", "timed out"),
        ("/big", "over the limit"),  # Content-Length says 5000 > 4096
        ("/page", "content type 'text/html' is not image/*"),
        ("/loop", "more than 3 redirects"),
        ("/to-private", "non-public address"),
        ("/to-ftp", "unsupported scheme"),
    ],
)
def test_http_refusals(server: str, policy: FetchPolicy, path: str, reason: str) -> None:
    url = f"{server}{path}"
    with pytest.raises(FetchError) as err:
        fetch(url, policy)
    message = str(err.value)
    assert message.startswith(f"{url}: ") and "\n" not in message
    assert reason in message or (reason == "over the limit" and "the limit is" in message)


def test_private_address_refused_unless_allowed(server: str, policy: FetchPolicy) -> None:
    strict = FetchPolicy(allow_hosts=(), read_timeout_s=1.0)
    for url in (f"{server}/ok.png", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(FetchError, match="non-public address"):
            fetch(url, strict)
    # A name that resolves to loopback is checked on its addresses, not its spelling.
    port = server.rsplit(":", 1)[1]
    with pytest.raises(FetchError, match="non-public address"):
        fetch(f"http://localhost:{port}/ok.png", strict)


def test_streamed_cap_without_content_length(server: str, policy: FetchPolicy) -> None:
    tight = FetchPolicy(allow_hosts=("127.0.0.1",), max_bytes=100, total_timeout_s=10)
    with pytest.raises(FetchError, match="over the limit"):
        fetch(f"{server}/drip", tight)


def test_files_only_under_roots(policy: FetchPolicy, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(PNG)
    got = fetch((root / "a.png").as_uri(), policy)
    assert got.data == PNG and got.content_type == "image/png"
    outside = tmp_path / "secret.png"
    outside.write_bytes(PNG)
    (root / "link.png").symlink_to(outside)
    for url in (outside.as_uri(), (root / "link.png").as_uri(), str(root / ".." / "secret.png")):
        with pytest.raises(FetchError, match="outside the allowed source roots"):
            fetch(url, policy)
    with pytest.raises(FetchError, match="file not found"):
        fetch((root / "nope.png").as_uri(), policy)
    (root / "huge.png").write_bytes(b"\0" * 5000)
    with pytest.raises(FetchError, match="limit"):
        fetch((root / "huge.png").as_uri(), policy)
    with pytest.raises(FetchError, match="unsupported scheme 'javascript'"):
        fetch("javascript:alert(1)", policy)


# --- decode --------------------------------------------------------------------------------


def _encoded(im: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def test_decode_modes_to_srgb() -> None:
    cmyk = decode_source(_encoded(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.image.mode == "RGB" and cmyk.source_mode == "CMYK"
    r, g, b = cmyk.image.getpixel((1, 1))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert decode_source(_encoded(pal)).image.getpixel((0, 0)) == (10, 200, 30)
    deep = Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.uint16))
    out = decode_source(_encoded(deep))
    assert out.image.mode == "RGB" and out.image.getpixel((0, 0)) == (127, 127, 127)
    grey = decode_source(_encoded(Image.new("L", (3, 3), 90)))
    assert grey.image.getpixel((0, 0)) == (90, 90, 90)
    rgba = decode_source(_encoded(Image.new("RGBA", (3, 3), (1, 2, 3, 0))))
    assert rgba.has_alpha and rgba.image.getpixel((0, 0)) == (1, 2, 3, 0)


def test_decode_icc_and_exif_orientation() -> None:
    lab = ImageCms.createProfile("LAB")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    tagged = Image.new("RGB", (6, 2), (250, 20, 20))
    icc = srgb.tobytes()
    out = decode_source(_encoded(tagged, icc_profile=icc))
    assert any("icc" in s for s in out.steps) and out.image.mode == "RGB"
    assert lab is not None
    sideways = Image.new("RGB", (6, 2), (0, 0, 255))
    exif = sideways.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    upright = decode_source(_encoded(sideways, "JPEG", exif=exif.tobytes()))
    assert upright.image.size == (2, 6) and "exif_transpose(6)" in upright.steps


def test_decode_refuses_bombs_and_garbage() -> None:
    bomb = _encoded(Image.new("L", (3000, 3000), 0))
    with pytest.raises(ImageError, match=r"http://x/b\.png: image is 3000x3000"):
        decode_source(bomb, "http://x/b.png", max_pixels=1_000_000)
    with pytest.raises(ImageError, match=r"http://x/g\.png: not a readable image"):
        decode_source(b"\x89PNG\r\n\x1a\n not really", "http://x/g.png")


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one private address is refused (a rebinding DNS server
    answers both); a host on the allow-list may resolve anywhere."""
    import socket

    from pipeline.sources import addresses

    answers = {
        "mixed.example": ["93.184.216.34", "10.0.0.7"],
        "mapped.example": ["::ffff:127.0.0.1"],
        "meta.example": ["169.254.169.254"],
        "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
    }

    def fake(host: str, port: int, *a: object, **k: object) -> list[tuple[object, ...]]:
        if host not in answers:
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(addresses.socket, "getaddrinfo", fake)
    for host, bad in (("mixed.example", "10.0.0.7"), ("mapped.example", "::ffff:127.0.0.1")):
        with pytest.raises(addresses.AddressRefused, match=re.escape(f"non-public address {bad}")):
            addresses.resolve_checked(host, 80, ())
    with pytest.raises(addresses.AddressRefused, match=r"169\.254\.169\.254"):
        addresses.resolve_checked("meta.example", 80, ())
    assert addresses.resolve_checked("public.example", 443, ())[0] == "93.184.216.34"
    assert addresses.resolve_checked("mixed.example", 80, ("MIXED.example.",))
    with pytest.raises(addresses.AddressRefused, match="does not resolve"):
        addresses.resolve_checked("nowhere.example", 80, ())
    with pytest.raises(FetchError, match=r"^http://mixed\.example/a\.png: .*10\.0\.0\.7"):
        fetch("http://mixed.example/a.png", FetchPolicy())
