"""The tasks layer of LoRA training: the job (database + blobs around the pure stage in
``pipeline.training``), its Celery task on ``train.<model-key>``, and the enqueue helper."""
