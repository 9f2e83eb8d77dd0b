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

# (text, context such as the active LoRA set)
Key = tuple[str, Hashable]


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
        # No zeros for an empty negative: SDXL's force_zeros_for_empty_prompt applies only
        # when negative_prompt is None, and the generator always passes a list of strings.
        pos = [(p, context) for p in prompts]
        neg = [(n, context) for n in negatives]
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

    def _encode_missing(
        self, pipe: Any, keys: list[Key], batch: dict[Key, tuple[Any, Any]]
    ) -> None:
        texts = [k[0] for k in keys]
        if not texts:
            return
        result = pipe.encode_prompt(
            prompt=texts,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        embeds = result[0]
        pooled = result[2] if len(result) == 4 else None
        self.encoded += len(texts)
        for i, key in enumerate(keys):
            # Copies, so an LRU entry does not keep its whole batch tensor alive.
            value = (
                embeds[i : i + 1].clone(),
                pooled[i : i + 1].clone() if pooled is not None else None,
            )
            batch[key] = value
            if self.max_entries:
                self._lru[key] = value
                while len(self._lru) > self.max_entries:
                    self._lru.popitem(last=False)


def _cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts) if len(parts) > 1 else parts[0]
