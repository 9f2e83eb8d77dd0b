"""The LoRA trainer: diffusers + peft on a Stable Diffusion pipeline's UNet (and text encoder).

Deterministic by construction: every step draws its batch, noise and timesteps from a
generator seeded with ``(seed, step)``, so a run resumed from a checkpoint at step k draws
exactly what an uninterrupted run draws from step k on, and two CPU runs with one seed end
with identical weights. An image is encoded through the VAE the first time a step draws it
(its mean and std; each step samples from them with the step's generator) and kept in a
``LatentCache`` (on disk for real runs), so memory holds one batch of images, never the set,
and no step waits for the whole set to be encoded. Encoding has no randomness, so when it
happens changes no weight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pipeline.digests import sha256_bytes
from pipeline.training.checkpoints import (
    Checkpoint,
    CheckpointStore,
    flatten_optimizer,
    unflatten_optimizer,
)
from pipeline.training.config import TEXT_TARGETS, TrainConfig
from pipeline.training.latents import LatentCache

ADAPTER = "default"
TE_PREFIX = "te."
UNET_PREFIX = "unet."


@dataclass
class Progress:
    step: int
    steps: int
    loss: float
    eta_s: float | None


@dataclass
class TrainResult:
    steps_done: int
    losses: list[float] = field(default_factory=list)
    checkpoint_keys: list[str] = field(default_factory=list)
    resumed_from: int | None = None
    seconds: float = 0.0

    def loss_summary(self) -> dict[str, float]:
        if not self.losses:
            return {}
        k = max(1, len(self.losses) // 10)
        return {
            "first": sum(self.losses[:k]) / k,
            "last": sum(self.losses[-k:]) / k,
            "min": min(self.losses),
            "mean": sum(self.losses) / len(self.losses),
        }


def set_adapters_enabled(module: Any, enabled: bool) -> None:
    """Switch every LoRA layer in ``module`` on or off (peft's layers, whoever added them)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):
            layer.enable_adapters(enabled)


def step_generator(seed: int, step: int) -> Any:
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def _pixels(img: Image.Image) -> Any:
    import numpy as np
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


def _no_images(i: int) -> Image.Image:
    raise RuntimeError("LoraTrainer: call cache() or stream() before training")


class LoraTrainer:
    """Trains one LoRA on ``pipe`` (a StableDiffusionPipeline); see the module doc."""

    def __init__(self, pipe: Any, config: TrainConfig, device: str = "cpu") -> None:
        import torch
        from diffusers import DDPMScheduler

        self.pipe, self.cfg, self.device = pipe, config, torch.device(device)
        cuda = self.device.type == "cuda"
        self.weight_dtype = (
            {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
                config.mixed_precision, torch.float32
            )
            if cuda
            else torch.float32
        )
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        for comp in (pipe.unet, pipe.vae, pipe.text_encoder):
            comp.requires_grad_(False)
            if self.weight_dtype == torch.float32:
                comp.to(self.device)
            else:
                comp.to(self.device, dtype=self.weight_dtype)
        self._add_adapters()
        if cuda and config.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            if config.text_encoder:
                pipe.text_encoder.gradient_checkpointing_enable()
        self.params = self._trainable()
        self.optimizer, self.lr_scheduler = self._optimizer()
        self.scaler = (
            torch.amp.GradScaler("cuda") if cuda and self.weight_dtype == torch.float16 else None
        )
        self.groups: list[list[int]] = []
        self.captions: list[str] = []
        self._keys: list[str] = []  # cache key per image (what determines its latent)
        self._load: Callable[[int], Image.Image] = _no_images
        self._store = LatentCache()
        self._dtype_tag = str(self.weight_dtype).removeprefix("torch.")

    # --- setup ---------------------------------------------------------------------

    def _add_adapters(self) -> None:
        import torch
        from peft import LoraConfig

        # peft's initial A matrices come from torch's global RNG: seed it for repeatability.
        torch.manual_seed(self.cfg.seed)
        lora: dict[str, Any] = dict(
            r=self.cfg.rank, lora_alpha=self.cfg.alpha, init_lora_weights="gaussian"
        )
        self.pipe.unet.add_adapter(
            LoraConfig(target_modules=list(self.cfg.unet_targets), **lora), adapter_name=ADAPTER
        )
        if self.cfg.text_encoder:
            from peft import inject_adapter_in_model

            # peft directly: transformers' add_adapter wants a newer peft than diffusers does.
            te_cfg = LoraConfig(target_modules=list(TEXT_TARGETS), **lora)
            inject_adapter_in_model(te_cfg, self.pipe.text_encoder, adapter_name=ADAPTER)
            self.pipe.text_encoder.peft_config = {ADAPTER: te_cfg}

    def _trainable(self) -> dict[str, list[Any]]:
        import torch

        out: dict[str, list[Any]] = {"unet": [], "te": []}
        mods = [("unet", self.pipe.unet)] + (
            [("te", self.pipe.text_encoder)] if self.cfg.text_encoder else []
        )
        for key, module in mods:
            for p in module.parameters():
                if p.requires_grad:
                    # LoRA weights stay fp32 under mixed precision: fp16 updates underflow.
                    p.data = p.data.to(torch.float32)
                    out[key].append(p)
        return out

    def _optimizer(self) -> tuple[Any, Any]:
        import torch

        groups = [{"params": self.params["unet"], "lr": self.cfg.lr}]
        if self.params["te"]:
            groups.append(
                {"params": self.params["te"], "lr": self.cfg.text_encoder_lr or self.cfg.lr}
            )
        opt = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)
        warm = max(0, self.cfg.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )
        return opt, sched

    def cache(self, images: Sequence[Image.Image], captions: list[str]) -> None:
        """Train on ``images`` already in memory (at training size), latents kept in memory."""
        self.stream(
            [im.size for im in images],
            [f"image{i}" for i in range(len(images))],
            images.__getitem__,
            captions,
            LatentCache(),
        )

    def stream(
        self,
        sizes: Sequence[tuple[int, int]],
        keys: Sequence[str],
        load: Callable[[int], Image.Image],
        captions: Sequence[str],
        store: LatentCache,
    ) -> None:
        """Train on images decoded by ``load(i)`` (at training size ``sizes[i]``) only when a
        step first draws them; their latents go to ``store`` under ``keys[i]``."""
        self.captions, self._keys, self._load, self._store = list(captions), list(keys), load, store
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            by_size.setdefault(tuple(size), []).append(i)  # type: ignore[arg-type]
        self.groups = [by_size[k] for k in sorted(by_size)]

    def _latent(self, i: int) -> tuple[Any, Any]:
        """Image ``i``'s (mean, std), scaled: from the store, or encoded now and stored."""
        import torch

        key = f"{self._keys[i]}-{self._dtype_tag}"
        hit = self._store.get(key)
        if hit is None:
            vae = self.pipe.vae
            scale = float(getattr(vae.config, "scaling_factor", 0.18215))
            with torch.no_grad():
                pixels = _pixels(self._load(i)).to(self.device, self.weight_dtype)
                dist = vae.encode(pixels).latent_dist
                hit = {
                    "mean": dist.mean.float().cpu() * scale,
                    "std": dist.std.float().cpu() * scale,
                }
            self._store.put(key, hit)
        return hit["mean"], hit["std"]

    def _embed(self, i: int) -> Any:
        """Caption ``i``'s embedding (text encoder frozen): from the store or encoded now."""
        import torch

        key = f"text-{sha256_bytes(self.captions[i].encode())}-{self._dtype_tag}"
        hit = self._store.get(key)
        if hit is None:
            with torch.no_grad():
                hit = {"embed": self._encode([self.captions[i]]).float().cpu()}
            self._store.put(key, hit)
        return hit["embed"]

    def _encode(self, captions: list[str]) -> Any:
        tok = self.pipe.tokenizer(
            captions,
            padding="max_length",
            max_length=self.pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.pipe.text_encoder(tok.input_ids.to(self.device), return_dict=False)[0]

    # --- one step ------------------------------------------------------------------

    def _batch(self, gen: Any) -> list[int]:
        import torch

        sizes = torch.tensor([len(g) for g in self.groups], dtype=torch.float64)
        group = self.groups[int(torch.multinomial(sizes, 1, generator=gen))]
        picks = torch.randint(0, len(group), (self.cfg.batch_size,), generator=gen)
        return [group[int(i)] for i in picks]

    def _loss(self, step: int) -> Any:
        import torch
        import torch.nn.functional as F
        from diffusers.training_utils import compute_snr

        gen = step_generator(self.cfg.seed, step)
        idx = self._batch(gen)
        pairs = [self._latent(i) for i in idx]
        mean = torch.cat([m for m, _ in pairs])
        std = torch.cat([sd for _, sd in pairs])
        latents = mean + std * torch.randn(mean.shape, generator=gen)
        noise = torch.randn(latents.shape, generator=gen)
        if self.cfg.noise_offset:
            # Shifts each channel's mean too, so the model learns darker darks, lighter lights.
            noise += self.cfg.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=gen)
        sched = self.noise_scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy = sched.add_noise(latents, noise, t)
        if self.cfg.text_encoder:
            cond = self._encode([self.captions[i] for i in idx])
        else:
            cond = torch.cat([self._embed(i) for i in idx]).to(self.device)
        dev = self.device
        with torch.autocast(
            dev.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32
        ):
            pred = self.pipe.unet(
                noisy.to(dev, self.weight_dtype),
                t.to(dev),
                cond.to(self.weight_dtype),
                return_dict=False,
            )[0]
        target = (
            sched.get_velocity(latents, noise, t)
            if sched.config.prediction_type == "v_prediction"
            else noise
        )
        err = F.mse_loss(pred.float(), target.to(dev).float(), reduction="none").mean(dim=[1, 2, 3])
        if self.cfg.snr_gamma is not None:
            snr = compute_snr(sched, t)
            weight = torch.clamp(snr, max=self.cfg.snr_gamma) / snr
            if sched.config.prediction_type == "v_prediction":
                weight = torch.clamp(snr, max=self.cfg.snr_gamma) / (snr + 1)
            err = err * weight.to(dev)
        return err.mean()

    def eval_loss(self, probes: int = 8) -> float:
        """Mean loss over a fixed set of draws (batches, noise, timesteps) without training:
        a steadier signal than the training losses, whose timesteps differ every step."""
        import torch

        with torch.no_grad():
            return sum(float(self._loss(-1 - k)) for k in range(probes)) / probes

    def step(self, step: int) -> float:
        import torch

        loss = self._loss(step)
        params = self.params["unet"] + self.params["te"]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    # --- state ---------------------------------------------------------------------

    def adapter_state(self) -> dict[str, dict[str, Any]]:
        from peft.utils import get_peft_model_state_dict

        out = {"unet": get_peft_model_state_dict(self.pipe.unet, adapter_name=ADAPTER)}
        if self.cfg.text_encoder:
            out["te"] = get_peft_model_state_dict(self.pipe.text_encoder, adapter_name=ADAPTER)
        return {
            k: {n: t.detach().float().cpu().contiguous() for n, t in v.items()}
            for k, v in out.items()
        }

    def checkpoint(self, step: int, losses: list[float]) -> Checkpoint:
        import torch

        tensors: dict[str, Any] = {}
        for comp, state in self.adapter_state().items():
            prefix = UNET_PREFIX if comp == "unet" else TE_PREFIX
            tensors.update({prefix + k: v for k, v in state.items()})
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        sched = {k: v for k, v in self.lr_scheduler.state_dict().items() if k != "lr_lambdas"}
        state = {
            "step": step,
            "losses": losses,
            "optimizer": opt_meta,
            "lr_scheduler": sched,
            "config": self.cfg.to_json(),
        }
        return Checkpoint(step, tensors, state)

    def restore(self, ckpt: Checkpoint) -> list[float]:
        import torch
        from peft.utils import set_peft_model_state_dict

        for prefix, module in ((UNET_PREFIX, self.pipe.unet), (TE_PREFIX, self.pipe.text_encoder)):
            part = {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
            if part:
                set_peft_model_state_dict(module, part, adapter_name=ADAPTER)
        for p in self.params["unet"] + self.params["te"]:
            p.data = p.data.to(torch.float32)
        self.optimizer.load_state_dict(unflatten_optimizer(ckpt.tensors, ckpt.state["optimizer"]))
        self.lr_scheduler.load_state_dict(
            {**ckpt.state["lr_scheduler"], "lr_lambdas": [None] * len(self.optimizer.param_groups)}
        )
        torch.set_rng_state(ckpt.tensors["rng.torch"])
        return [float(x) for x in ckpt.state["losses"]]


def train(
    trainer: LoraTrainer,
    store: CheckpointStore | None = None,
    resume: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Run ``trainer`` to ``cfg.steps`` (from the latest checkpoint in ``store`` if ``resume``).

    A checkpoint is written every ``checkpoint_every`` steps and at the end. ``stop_after``
    ends the loop early after that many steps in total (tests use it to simulate a crash).
    """
    cfg = trainer.cfg
    result = TrainResult(steps_done=0)
    start = 0
    ckpt = store.latest() if (store is not None and resume) else None
    if ckpt is not None:
        result.losses = trainer.restore(ckpt)
        start = result.resumed_from = ckpt.step
    began = time.monotonic()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(start, end):
        result.losses.append(trainer.step(step))
        done = step + 1
        if store is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            result.checkpoint_keys = store.save(trainer.checkpoint(done, result.losses))
        if on_progress is not None:
            rate = (time.monotonic() - began) / (done - start)
            loss = result.losses[-1]
            on_progress(
                Progress(
                    done,
                    cfg.steps,
                    loss if math.isfinite(loss) else float("nan"),
                    rate * (cfg.steps - done),
                )
            )
    result.steps_done = max(start, end)
    result.seconds = time.monotonic() - began
    return result
