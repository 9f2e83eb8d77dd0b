"""moto's S3 backend over real HTTP, served the way S3 and MinIO serve: HTTP/1.1 keep-alive.

``moto_server`` runs moto under werkzeug's development server, which closes the connection
after every response and routes each request through a dispatcher that lists moto's package
folder on disk. On this 2-core machine that costs ~3 ms of server CPU and a fresh TCP
connection per request, more than the control plane it is meant to stand next to. Here the
same moto S3 application (same request parsing, checksums, CopyObject, errors) is served by
granian, a production HTTP server (Rust) that keeps connections open: ~1.3 ms per request.

    python -m tests.moto_s3 --port 5000
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from typing import Any

COUNT_PATH = "/_requests"  # not a bucket: S3 bucket names cannot start with "_"


class RequestCounter:
    """WSGI middleware: counts requests by method and first key segment (the benchmark's
    blob-store requests per shot); ``GET /_requests`` answers the counts as JSON."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == COUNT_PATH:
            with self.lock:
                body = json.dumps(dict(self.counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        parts = path.lstrip("/").split("/")
        prefix = parts[1] if len(parts) > 2 else ""  # /bucket/<prefix>/...
        with self.lock:
            self.counts[f"{environ.get('REQUEST_METHOD', '?')} {prefix}"] += 1
        return self.app(environ, start_response)


def make_app() -> object:
    from moto.moto_server.werkzeug_app import create_backend_app

    app = create_backend_app("s3")
    app.debug = False  # moto turns Flask's debug helpers on; they only add per-request work
    return RequestCounter(app)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2, help="WSGI threads (moto holds the GIL)")
    args = ap.parse_args()
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "tests.moto_s3:make_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.WSGI,
        workers=1,
        blocking_threads=args.threads,
        log_enabled=False,
    ).serve()


if __name__ == "__main__":
    main()
