"""The trained adapter as a brand YAML ``loras`` entry: printed, or written into the file.

The file is edited as text (so its comments survive), checked by loading the result, and
replaced atomically; a result that does not load is never written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.brand.config import BrandConfigError


def lora_entry(
    name: str, path: str | Path, sha256: str, trigger: str, run_id: int, dataset_digest: str
) -> str:
    # json.dumps quotes every value: YAML reads a JSON string as the same string.
    return (
        f"  # trained by `shotline lora train`: run {run_id}, dataset {dataset_digest[:16]}\n"
        f"  - name: {json.dumps(name)}\n"
        f"    path: {json.dumps(str(path))}\n"
        f"    sha256: {json.dumps(sha256)}\n"
        f"    trigger_word: {json.dumps(trigger)}\n"
        f'    version: "train-{run_id}"\n'
    )


def insert_entry(text: str, entry: str) -> str:
    """``text`` with ``entry`` as the first item of its top-level ``loras:`` list."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.match(r"^loras:\s*(#.*)?$", line):
            return "".join([*lines[: i + 1], entry, *lines[i + 1 :]])
        if re.match(r"^loras:\s*\[\s*\]\s*(#.*)?$", line):
            return "".join([*lines[:i], "loras:\n", entry, *lines[i + 1 :]])
    sep = "" if not text or text.endswith("\n") else "\n"
    return f"{text}{sep}loras:\n{entry}"


def write_into_brand(brand_file: Path, entry: str) -> None:
    """Add ``entry`` to ``brand_file``; ``BrandConfigError`` (file untouched) if it won't load."""
    from pipeline.brand.loader import load_brand
    from pipeline.files import atomic_write_bytes

    text = brand_file.read_text(encoding="utf-8")
    new_text = insert_entry(text, entry)
    tmp = brand_file.with_name(f".{brand_file.name}.check.yaml")
    try:
        tmp.write_text(new_text, encoding="utf-8")
        load_brand(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(brand_file, new_text.encode("utf-8"))


__all__ = ["BrandConfigError", "insert_entry", "lora_entry", "write_into_brand"]
