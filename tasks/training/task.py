"""The Celery task: ``shotline.train_lora`` on ``train.<model-key>``, thin over ``run_job``.

Late acks with reject-on-worker-lost (the app's defaults): a worker killed mid-run leaves
the message unacked, the broker redelivers it, and the next worker resumes from the run's
latest checkpoint. A bad dataset fails the row and is not retried.
"""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings
from tasks.celery_app import app, submit
from tasks.dispatch import ShotlineTask
from tasks.queues import TASK_TRAIN, model_key, train_queue
from tasks.training.job import TrainingFailed, run_job


@app.task(name=TASK_TRAIN, base=ShotlineTask, bind=True, throws=(TrainingFailed,))
def train_lora(self: ShotlineTask, run_id: int) -> dict[str, Any]:
    return run_job(self.context, run_id)


def enqueue_training(settings: Settings, run_id: int, base_model: str) -> str:
    """Send run ``run_id`` to its base model's training queue; returns the queue name."""
    queue = train_queue(model_key(base_model))
    submit(settings, train_lora, [run_id], queue=queue)
    return queue
