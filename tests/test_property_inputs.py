"""Property-based hostile input: generated CSV bytes, brand YAML and template strings.

Hypothesis drives the importer (``shotline import``), ``shotline brands check`` and the prompt
renderer inside a child process whose address space and CPU time are capped with
``resource.setrlimit``: whatever the input, the CLI exits 0 or 2 with no traceback, the
renderer either renders or refuses with ``RenderError``, and memory stays under the cap (a
``MemoryError`` in the child is a traceback, so it fails the test).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMORY_CAP = 3 * 1024**3  # address space; the CLI itself maps ~1 GiB of it (numpy, pandas)
CPU_CAP_S = 240

CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
sys.path.insert(0, {root!r})
from tests.hostile_cases import run
run({kind!r}, {examples}, {tmp!r})
"""


@pytest.mark.parametrize(("kind", "examples"), [("csv", 40), ("brand_yaml", 40), ("template", 80)])
def test_hostile_inputs_exit_cleanly_within_bounds(
    kind: str, examples: int, tmp_path: Path
) -> None:
    code = CHILD.format(
        mem=MEMORY_CAP,
        cpu=CPU_CAP_S,
        root=str(ROOT),
        kind=kind,
        examples=examples,
        tmp=str(tmp_path),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (
        f"{kind}: rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    assert f"{kind}: {examples} examples ok" in proc.stdout
