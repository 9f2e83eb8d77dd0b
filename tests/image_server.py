"""A loopback HTTP server of test images (tests allow 127.0.0.1 explicitly)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def png(size: tuple[int, int] = (8, 6), mode: str = "RGB", color: object = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")  # type: ignore[arg-type]
    return buf.getvalue()


PNG = png()
# 3000 x 3000 of one grey: a few KB on the wire, 9 megapixels once decoded.
BOMB = png((3000, 3000), "L", 0)

ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/ok.png": (200, {"Content-Type": "image/png", "ETag": '"v1"'}, PNG),
    "/other.png": (200, {"Content-Type": "image/png"}, png((5, 5), color=(1, 2, 3))),
    "/page": (200, {"Content-Type": "text/html"}, b"<html></html>"),
    "/fake.png": (200, {"Content-Type": "image/png"}, b"GIF89a but not really an image"),
    "/bomb.png": (200, {"Content-Type": "image/png"}, BOMB),
    "/big": (200, {"Content-Type": "image/png"}, b"\0" * 20000),
    "/hop": (302, {"Location": "/ok.png"}, b""),
    "/loop": (302, {"Location": "/loop"}, b""),
    "/to-private": (302, {"Location": "http://localhost:PORT/ok.png"}, b""),
    "/to-ftp": (301, {"Location": "ftp://example.com/x.png"}, b""),
}


class Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}  # noqa: RUF012

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/slow":
            time.sleep(1.5)
        if path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                time.sleep(0.05)
            return
        status, headers, body = ROUTES.get(path, (404, {}, b"not here"))
        if self.headers.get("If-None-Match") == '"v1"' and path == "/ok.png":
            status, body = 304, b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v.replace("PORT", str(self.server.server_address[1])))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout, size cap) is what the tests do on purpose


@contextmanager
def image_server() -> Iterator[str]:
    httpd = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
