"""Deterministic shot seeds.

A seed is a hash of (brand, product key, visual variant key, template, revision), so
re-planning, another machine or another batch composition reproduces it exactly,
and any change to one of those inputs gives an unrelated seed.
"""

from __future__ import annotations

import hashlib
import json

SEED_SCHEME = "shotline-seed-v1"
MAX_SEED_63 = (1 << 63) - 1
MAX_SEED_32 = (1 << 32) - 1


def derive_seed(
    brand: str,
    product_key: str,
    variant_key: str,
    template: str,
    revision: int,
    bits: int = 63,
    candidate: int = 0,
) -> int:
    """A non-negative ``bits``-bit seed (63 fits a signed BIGINT and ``torch.Generator``).

    Inputs are JSON-encoded as a list, so ("a|b", "c") and ("a", "b|c") can't collide.
    ``candidate`` numbers the shots of one slot (a template's ``candidates: N``): candidate 0
    keeps the seed the slot always had, the others add their index to the hashed inputs.
    """
    if bits not in (32, 63):
        raise ValueError("bits must be 32 or 63")
    if candidate < 0:
        raise ValueError("candidate must be >= 0")
    parts: list[object] = [SEED_SCHEME, brand, product_key, variant_key, template, int(revision)]
    if candidate:
        parts.append(int(candidate))
    payload = json.dumps(
        parts,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)
