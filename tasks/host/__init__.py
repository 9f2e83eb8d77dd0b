"""The gate on the GPU host (generate -> score -> finalize in one task)."""
