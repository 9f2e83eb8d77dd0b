"""Training hyperparameters: one frozen record, stored whole on the training row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Upper bounds: a number past these is a typo or an attack (a 40-digit --steps overflowed
# the row's integer column after the whole dataset had been read).
MAX_STEPS = 1_000_000
MAX_RESOLUTION = 4096
MAX_BATCH = 1024
MAX_SEED = 2**63 - 1

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: float = 16.0
    steps: int = 1000
    lr: float = 1e-4
    warmup_steps: int = 0
    resolution: int = 512
    batch_size: int = 1
    text_encoder: bool = False
    text_encoder_lr: float | None = None  # None: the same as ``lr``
    seed: int = 0
    snr_gamma: float | None = 5.0  # min-SNR weighting; None turns it off
    noise_offset: float = 0.0
    buckets: bool = False  # aspect-ratio buckets instead of a centre crop
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    mixed_precision: str = "bf16"  # on CUDA only: "fp16", "bf16" or "no"
    gradient_checkpointing: bool = True  # on CUDA only
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    unet_targets: tuple[str, ...] = field(default=UNET_TARGETS)

    def __post_init__(self) -> None:
        problems = []
        if self.rank < 1 or self.rank > 1024:
            problems.append(f"rank must be 1..1024, got {self.rank}")
        if not 0 < self.alpha < 1e6:  # NaN fails this too
            problems.append(f"alpha must be a positive number, got {self.alpha}")
        if not 1 <= self.steps <= MAX_STEPS:
            problems.append(f"steps must be 1..{MAX_STEPS}, got {self.steps}")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"seed must be 0..{MAX_SEED}, got {self.seed}")
        if not 0 < self.lr < 1:
            problems.append(f"lr must be between 0 and 1, got {self.lr}")
        if not 8 <= self.resolution <= MAX_RESOLUTION or self.resolution % 8:
            problems.append(
                f"resolution must be a multiple of 8 in 8..{MAX_RESOLUTION}, got {self.resolution}"
            )
        if not 1 <= self.batch_size <= MAX_BATCH:
            problems.append(f"batch size must be 1..{MAX_BATCH}, got {self.batch_size}")
        if not (1 <= self.checkpoint_every <= MAX_STEPS and 1 <= self.keep_checkpoints <= 1000):
            problems.append("checkpoint_every must be 1..1000000 and keep_checkpoints 1..1000")
        if self.mixed_precision not in ("fp16", "bf16", "no"):
            problems.append(f"mixed_precision must be fp16, bf16 or no, got {self.mixed_precision}")
        if problems:
            raise ValueError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["unet_targets"] = list(self.unet_targets)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "unet_targets" in known:
            known["unet_targets"] = tuple(known["unet_targets"])
        return cls(**known)
