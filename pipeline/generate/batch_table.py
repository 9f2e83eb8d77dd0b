"""The batch size for a batch key, from the per-architecture table in settings.

One ``batch_size`` fits no fleet: SD1.5 at 512² saturates an H100 near b=8 while SDXL at
1024² wants b=4 and fills memory well before 16. ``settings.batch_sizes`` maps
``"ARCH@WxH"`` or ``"ARCH"`` to a size (measured by tests/benchmarks/gpu/run_all.sh);
anything it does not name falls back to ``settings.batch_size``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import Settings

_ARCH_NAMES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
}


def architecture(pipe: Any) -> str:
    """A short architecture name for a pipeline: ``sd``, ``sdxl`` or its class name, lowered."""
    name = type(pipe).__name__
    return _ARCH_NAMES.get(name, name.lower())


def batch_size_for(settings: Settings, arch: str, width: int, height: int) -> int:
    """The table's size for ``arch`` at ``width``x``height``, else ``settings.batch_size``."""
    table = settings.batch_sizes
    for key in (f"{arch}@{width}x{height}", arch):
        if key in table:
            return max(1, int(table[key]))
    return max(1, settings.batch_size)
