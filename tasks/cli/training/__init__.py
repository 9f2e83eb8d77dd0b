"""``shotline lora ...``: brand LoRA training."""
