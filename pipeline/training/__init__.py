"""Brand LoRA training: dataset checks, the trainer, checkpoints, validation renders.

Pure stages: files and a BlobStore in, weights and reports out. The Celery task and the
CLI (``tasks/training``, ``tasks/cli/training``) only wire them to the database.
"""
