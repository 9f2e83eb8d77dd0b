"""Generation stage: model specs and loading, the diffusers generator, LoRA adapters,
schedulers and the offline tiny preset."""
