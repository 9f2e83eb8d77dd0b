"""The line: one shot's way from ``planned`` to ``published``, one module per phase.

The orchestrator (``orchestrator``) drives a generate message through the phases in order,
passing typed records from one to the next; the Celery tasks (``tasks.dispatch``) and the
in-process runner call only the orchestrator's entry points:

- ``claim``: load the message's rows by id in one short transaction, skip what another
  worker owns or what is already past this phase (redelivery is harmless), hand back.
- ``prepare``: packshot shots' sources (read once, fetched if still pending), cutout and
  placement, through the pure ``pipeline.packshot`` stage.
- ``generate``: GPU batches (formed once, by ``pipeline.generate.batching``) through the
  generator; packshot batches inpaint around the placed product and composite it back.
- ``score``: the gate's CLIP checks, one batch per brand under that brand's policy
  (``pipeline.gate.policy`` decides).
- ``finalize``: watermark, provenance, encoding and the put of each final file; the packshot
  fidelity checks on the final file, folded into the same decision
  (``pipeline.gate.policy.with_checks``); the packshot masks' puts. Where it runs
  is a strategy chosen once per message (``finalize.HostFinalize``: the GPU host's finalize
  threads, overlapping the next batch; ``finalize.QueueFinalize``: the raw PNG is stored and
  the ``cpu`` queue's gate scores and finalizes it).
- ``record``: one transaction per batch: generations, filter results, watermarks,
  embeddings, packshot records, failures with their kind.
- ``publish``: approved shots' final files under their published keys, ``assets`` rows.
"""
