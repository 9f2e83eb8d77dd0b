"""The sample brand with its gate opened up, for benchmarks on random weights.

Random-weight CLIP would reject nearly everything (product match, competitor prompts), and a
benchmark wants every image to go all the way through. Rejected images are finalized too, so
the gate's work is the same either way; ``keep_concepts`` keeps the safety concepts scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def write_permissive_brand(brands_dir: Path, keep_concepts: bool = True) -> dict[str, Any]:
    """Write ``brands_dir/bench.yaml`` (brand ``bench``); returns its config as a dict."""
    acme = yaml.safe_load((ROOT / "samples" / "brands" / "acme.yaml").read_text())
    acme["name"] = "bench"
    acme.setdefault("safety", {})["product_match_min"] = -1.0
    acme["safety"]["competitor_threshold"] = 1.0
    acme["safety"]["logo_threshold"] = 1.0
    acme["competitors"] = []
    if not keep_concepts:
        acme["safety"]["concepts"] = []
    brands_dir.mkdir(parents=True, exist_ok=True)
    (brands_dir / "bench.yaml").write_text(yaml.safe_dump(acme))
    return acme
