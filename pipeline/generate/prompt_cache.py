"""Text-embedding caching: each distinct prompt or negative is encoded once.

A catalog batch repeats its negative prompt on every shot and often its templates too, and
plain diffusers runs the text encoders over the whole list, duplicates included. Here the
distinct texts of a batch are encoded once (in one text-encoder call) and the per-shot
embeddings are assembled from them; with ``max_entries > 0`` they are also kept across
batches in an LRU. Keys include the active LoRA set, since an adapter can touch the text
encoders. Only the SD 1.x/2.x and SDXL pipelines are handled (their ``encode_prompt``
signatures are known); any other pipeline gets its raw prompts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

# Pipelines whose encode_prompt returns (embeds, neg) or (embeds, neg, pooled, neg_pooled).
_SD = ("StableDiffusionPipeline",)
_SDXL = ("StableDiffusionXLPipeline",)

# (text, context such as the active LoRA set, "use zeros" for SDXL's empty negative)
Key = tuple[str, Hashable, bool]


class PromptCache:
    """Per-text embeddings for one pipeline; bounded LRU across batches."""

    def __init__(self, enabled: bool = True, max_entries: int = 0) -> None:
        self.enabled = enabled
        self.max_entries = max(0, max_entries)
        self._lru: OrderedDict[Key, tuple[Any, Any]] = OrderedDict()
        self.encoded = 0  # texts run through the encoders; tests and benchmarks watch this
        self.hits = 0

    def clear(self) -> None:
        self._lru.clear()

    def pipe_kwargs(
        self,
        pipe: Any,
        prompts: Sequence[str],
        negatives: Sequence[str],
        context: Hashable = (),
    ) -> dict[str, Any]:
        """Keyword arguments for ``pipe(...)``: embeddings when supported, else the texts."""
        kind = type(pipe).__name__
        if not self.enabled or kind not in _SD + _SDXL:
            return {"prompt": list(prompts), "negative_prompt": list(negatives)}
        xl = kind in _SDXL
        # SDXL's own negative path gives zeros for an empty negative (force_zeros_for_empty_prompt).
        zero_empty = xl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        pos = [self._key(p, context, False) for p in prompts]
        neg = [self._key(n, context, zero_empty and not n) for n in negatives]
        batch: dict[Key, tuple[Any, Any]] = {}
        for key in pos + neg:
            if key in batch:
                continue
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
                self.hits += 1
                batch[key] = hit
        self._encode_missing(pipe, [k for k in dict.fromkeys(pos + neg) if k not in batch], batch)
        out = {
            "prompt_embeds": _cat([batch[k][0] for k in pos]),
            "negative_prompt_embeds": _cat([batch[k][0] for k in neg]),
        }
        if xl:
            out["pooled_prompt_embeds"] = _cat([batch[k][1] for k in pos])
            out["negative_pooled_prompt_embeds"] = _cat([batch[k][1] for k in neg])
        return out

    # --- internals ---------------------------------------------------------------

    @staticmethod
    def _key(text: str, context: Hashable, zeros: bool) -> Key:
        return (text, context, zeros)

    def _encode_missing(
        self, pipe: Any, keys: list[Key], batch: dict[Key, tuple[Any, Any]]
    ) -> None:
        import torch

        texts = [k[0] for k in keys if not k[2]]
        encoded: dict[str, tuple[Any, Any]] = {}
        if texts:
            result = pipe.encode_prompt(
                prompt=texts,
                device=pipe._execution_device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
            embeds = result[0]
            pooled = result[2] if len(result) == 4 else None
            for i, text in enumerate(texts):
                # Copies, so an LRU entry does not keep its whole batch tensor alive.
                encoded[text] = (
                    embeds[i : i + 1].clone(),
                    pooled[i : i + 1].clone() if pooled is not None else None,
                )
            self.encoded += len(texts)
        zeros: tuple[Any, Any] | None = None
        for key in keys:
            text, _, want_zeros = key
            if want_zeros:
                if zeros is None:
                    # The shape of a real encoding: encode "" once if nothing else was.
                    ref = next(iter(encoded.values()), None) or self._reference(pipe)
                    zeros = (torch.zeros_like(ref[0]), torch.zeros_like(ref[1]))
                value = zeros
            else:
                value = encoded[text]
            batch[key] = value
            if self.max_entries:
                self._lru[key] = value
                while len(self._lru) > self.max_entries:
                    self._lru.popitem(last=False)

    def _reference(self, pipe: Any) -> tuple[Any, Any]:
        result = pipe.encode_prompt(
            prompt=[""],
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        self.encoded += 1
        return result[0], result[2]


def _cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts) if len(parts) > 1 else parts[0]
