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


def make_app() -> object:
    from moto.moto_server.werkzeug_app import create_backend_app

    app = create_backend_app("s3")
    app.debug = False  # moto turns Flask's debug helpers on; they only add per-request work
    return app


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
