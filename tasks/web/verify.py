"""``POST /api/verify``: what ``shotline verify --json`` says about an uploaded file.

The body is the file's bytes (``Content-Type: application/octet-stream`` or ``image/*``), read
in chunks up to ``MAX_UPLOAD_BYTES`` (a bigger one is refused with 413 before it is kept),
then decoded by the bounded decoder (``pipeline.images``, through ``tasks.verify``): its
pixel count is checked from the header before any pixel is decoded. The answer is the CLI's
report, encoded the same way (``json.dumps(..., default=str)``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipeline.images import DEFAULT_MAX_IMAGE_BYTES
from tasks.verify import VerifySetupError, file_report
from tasks.web.api import ErrorOut
from tasks.web.auth import Viewer, WebError, require_viewer, web_state

router = APIRouter(prefix="/api", tags=["verify"])

# The bounded decoder's byte cap: no product image comes near it.
MAX_UPLOAD_BYTES = DEFAULT_MAX_IMAGE_BYTES

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image file's bytes (PNG, JPEG, WebP ...).",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report `shotline verify --json` prints.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    **{code: {"model": ErrorOut} for code in (401, 413, 422, 503)},
}


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The request body, at most ``cap`` bytes; refused (413) as soon as it is more."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise WebError(413, f"upload: {int(declared)} bytes; the limit is {cap}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise WebError(413, f"upload: over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/verify", openapi_extra=_BODY, responses=_RESPONSES, response_class=Response)
async def verify_api(request: Request, _v: Viewer = Depends(require_viewer)) -> Response:
    """The watermark, provenance, lineage and rendition of an uploaded image: the report of
    ``shotline verify --json`` (``verified`` false for a file without a valid watermark)."""
    data = await read_capped_body(request, MAX_UPLOAD_BYTES)
    if not data:
        raise WebError(422, "upload: empty body; send the image file's bytes")
    try:
        report = await run_in_threadpool(file_report, web_state(request), data)
    except VerifySetupError as exc:
        raise WebError(503, f"this server cannot verify: {exc}") from None
    except ValueError as exc:
        raise WebError(422, f"upload: {exc}") from None
    return Response(json.dumps(report, default=str), media_type="application/json")
