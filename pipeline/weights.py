"""Checks a ``.safetensors`` file's header before anything maps or loads it.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (tensor
name -> dtype, shape, [start, end) byte offsets into the data that follows, plus an
optional ``__metadata__`` of strings), then the data. Loading a file that is not one
(junk, a pickle renamed ``.safetensors``, a truncated download) can map gigabytes before
failing, or fail differently in every library. Checking costs one small read.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from pipeline.files import InputFileError, open_regular

MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


def _tensor_problem(name: str, entry: Any, data_size: int) -> str | None:
    if not isinstance(entry, dict):
        return f"tensor {name!r} is not described by an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        return f"tensor {name!r} has unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"tensor {name!r} has a bad shape {shape!r}"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        return f"tensor {name!r} has data offsets {offsets!r} outside the file"
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        return f"tensor {name!r}: data size does not match its shape and dtype"
    return None


def _header_problem(header: Any, data_size: int) -> str | None:
    if not isinstance(header, dict):
        return "header is not a JSON object"
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return "__metadata__ must map names to strings"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        return "holds no tensors"
    for name, entry in tensors.items():
        problem = _tensor_problem(name, entry, data_size)
        if problem:
            return problem
    return None


def check_safetensors(
    path: str | os.PathLike[str], what: str = "weights", max_bytes: int | None = None
) -> None:
    """Raise ``InputFileError`` unless ``path`` is a regular, well-formed safetensors file."""
    safetensors_header(path, what, max_bytes)


def safetensors_header(
    path: str | os.PathLike[str], what: str = "weights", max_bytes: int | None = None
) -> dict[str, dict[str, Any]]:
    """The tensors of a well-formed safetensors file by name (dtype, shape, data offsets),
    read from its header alone; ``InputFileError`` for anything else."""
    with open_regular(path, max_bytes, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise InputFileError(path, f"{what}: not a safetensors file (only {size} bytes)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n > size - 8 or n < 2:
            raise InputFileError(
                path,
                f"{what}: not a safetensors file (header length {n} does not fit the file; "
                "a pickle or other format renamed .safetensors?)",
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputFileError(path, f"{what}: not a safetensors file (header is not JSON)") from None
    problem = _header_problem(header, size - 8 - n)
    if problem:
        raise InputFileError(path, f"{what}: not a valid safetensors file ({problem})")
    return {k: v for k, v in header.items() if k != "__metadata__"}
