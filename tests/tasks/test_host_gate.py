"""The gate on the GPU host, in-process: finalizing batch N overlaps generating batch N+1 (from
the recorded timestamps), a shot costs two blob-store requests from generation to publish
(counted on the wire, against moto's S3 server), and a failing finalize falls back to the cpu
queue's gate without losing the shot."""

from __future__ import annotations

import importlib
import itertools
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from catalog import migrate
from catalog.models import FilterResult, Generation, Shot, Watermark
from pipeline.gate.policy import GateModelError
from pipeline.settings import Settings
from pipeline.types import FinalImage, Gate, ProvenanceInfo
from tasks.context import context_for, reset_contexts
from tasks.dispatch import enqueue_publish, message_size
from tasks.fakes import PassThroughGate
from tasks.runner import run_line
from tests.tasks.conftest import approve_all, assert_line_sound, make_bucket, seed_shots

FAKES = {
    "generator_factory": "tasks.fakes:fixed_image_generator",
    "gate_factory": "tasks.fakes:pass_through_gate",
}


def _settings(base: Settings, **over: Any) -> Settings:
    settings = base.model_copy(update={**FAKES, **over})
    migrate.upgrade(settings.database_url)
    reset_contexts()
    return settings


def _generations(settings: Settings, ids: list[int]) -> dict[int, Generation]:
    with context_for(settings).sessions() as s:
        rows = s.scalars(select(Generation).where(Generation.shot_id.in_(ids))).all()
        return {g.shot_id: g for g in rows}


def test_finalizing_overlaps_the_next_batch(
    tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each GPU batch "denoises" for 0.4 s; finalizing a shot takes 0.3 s (0.6 s a batch),
    # so without overlap the three batches would take 3 x 1.0 s one after the other.
    monkeypatch.setenv("SHOTLINE_FAKE_GENERATE_DELAY_S", "0.4")
    monkeypatch.setenv("SHOTLINE_FAKE_FINALIZE_DELAY_S", "0.3")
    settings = _settings(tmp_settings, batch_size=2, gpu_batches_per_task=3)
    assert message_size(settings) == 6
    ids = seed_shots(settings, 6)
    summary = run_line(settings, progress=False)
    assert summary.counts == {"pending_review": 6}
    gens = _generations(settings, ids)
    batches: dict[float, dict[str, float]] = {}
    for g in gens.values():
        t = g.timings
        assert {"generate_s", "score_s", "finalize_s", "finalize_cpu_s"} <= t.keys()
        batches[t["generate_start"]] = t
    assert len(batches) == 3  # one message, three GPU batches of two
    order = [batches[k] for k in sorted(batches)]
    for this, nxt in itertools.pairwise(order):
        # Finalizing this batch ran while the next one was generating.
        assert this["finalize_start"] < nxt["generate_end"]
        assert this["finalize_end"] > nxt["generate_start"]
        assert this["generate_end"] <= nxt["generate_start"]  # the GPU runs one at a time
    assert all(abs(t["finalize_s"] - 0.3) < 0.25 for t in order)
    assert all(g.blob_key == "" for g in gens.values())  # store_raw off: no raw PNG


class _CountingRequests:
    """Every HTTP request boto3 sends, by method and key prefix (before-send: on the wire)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()

    def __call__(self, request: Any, **_: Any) -> None:
        path = request.url.split("?", 1)[0].split("/", 4)
        prefix = path[4].split("/", 1)[0] if len(path) > 4 else ""
        self.requests[f"{request.method} {prefix}"] += 1

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def _line_requests(settings: Settings, n: int) -> _CountingRequests:
    """Generate -> gate -> approve -> publish ``n`` shots; the blob-store requests it took."""
    ids = seed_shots(settings, n)
    counter = _CountingRequests()
    store: Any = context_for(settings).store
    store.client.meta.events.register("before-send.s3", counter)
    summary = run_line(settings, progress=False)
    assert summary.counts == {"pending_review": n}
    approve_all(settings, ids)
    enqueue_publish(ids, settings)
    info = assert_line_sound(settings, ids)
    assert info["states"] == {"published": n}
    return counter


def test_two_blob_requests_per_shot_from_generation_to_publish(
    tmp_settings: Settings, moto_server: str
) -> None:
    s3 = {"blob_backend": "s3", "s3_endpoint_url": moto_server}
    on_gpu = _line_requests(_settings(tmp_settings, s3_bucket=make_bucket(moto_server), **s3), 6)
    # One put of the final file, one server-side copy to publish it. Nothing under raw/.
    # Publishing also makes the sample brand's channel renditions (issue 25): the master is
    # read once for all of them, then one put per rendition (three channels, one each).
    renditions = 3 * 6
    assert on_gpu.total <= 2 * 6 + 6 + renditions, on_gpu.requests
    want = Counter({"PUT final": 6, "PUT acme": 6 + renditions, "GET final": 6})
    assert on_gpu.requests == want, on_gpu.requests

    cpu = _settings(
        tmp_settings.model_copy(update={"database_url": tmp_settings.database_url + "-cpu"}),
        s3_bucket=make_bucket(moto_server),
        gate_on="cpu",
        **s3,
    )
    on_cpu = _line_requests(cpu, 6)
    # The cpu queue's gate: raw put, raw get, final put, publish copy (and the renditions).
    assert on_cpu.total == 4 * 6 + 6 + renditions, on_cpu.requests


class _FailsOnTheHostGate(PassThroughGate):
    """Finalize fails on the GPU host's finalize threads (a stage error there) and works
    anywhere else (the cpu queue's gate)."""

    def finalize(
        self,
        shot_id: int,
        image: Any,
        provenance: ProvenanceInfo,
        fmt: str | None = None,
        keep: Any = None,
    ) -> FinalImage:
        if threading.current_thread().name.startswith("finalize"):
            raise RuntimeError("watermark library fell over")
        return super().finalize(shot_id, image, provenance, fmt, keep)


def fails_on_the_host_gate(settings: Settings) -> Gate:
    return _FailsOnTheHostGate()


def test_a_failing_finalize_falls_back_to_the_cpu_gate(tmp_settings: Settings) -> None:
    gate = "tests.tasks.test_host_gate:fails_on_the_host_gate"
    settings = _settings(tmp_settings, gate_factory=gate)
    ids = seed_shots(settings, 3)
    summary = run_line(settings, progress=False)
    assert summary.counts == {"pending_review": 3}
    gens = _generations(settings, ids)
    # The fallback stored the raw PNG for the cpu gate, which then finalized each shot once.
    assert all(g.blob_key.startswith("raw/") for g in gens.values())
    with context_for(settings).sessions() as s:
        assert len(s.scalars(select(FilterResult).where(FilterResult.shot_id.in_(ids))).all()) == 3
        assert len(s.scalars(select(Watermark).where(Watermark.shot_id.in_(ids))).all()) == 3
        states = {sh.state for sh in s.scalars(select(Shot).where(Shot.id.in_(ids)))}
    assert states == {"pending_review"}


def test_store_raw_keeps_the_raw_png(tmp_settings: Settings, tmp_path: Path) -> None:
    settings = _settings(tmp_settings, store_raw=True)
    ids = seed_shots(settings, 2)
    assert run_line(settings, progress=False).counts == {"pending_review": 2}
    store = context_for(settings).store
    for g in _generations(settings, ids).values():
        assert g.blob_key.startswith("raw/") and g.blob_backend == "local"
        assert len(store.get(g.blob_key)) == g.size_bytes


_LOADS: list[int] = []


def gate_that_fails_its_first_load(settings: Settings) -> Gate:
    """The first load fails (say, CLIP does not fit beside the model); later ones work."""
    _LOADS.append(1)
    if len(_LOADS) == 1:
        raise RuntimeError("CUDA out of memory while loading CLIP")
    return PassThroughGate()


def test_a_host_that_cannot_load_the_gate_leaves_gating_to_the_cpu_queue(
    tmp_settings: Settings,
) -> None:
    # The factory runs from the module as the settings name it (pytest may import this file
    # under another name): count its loads there.
    loads = importlib.import_module("tests.tasks.test_host_gate")._LOADS
    loads.clear()
    gate = "tests.tasks.test_host_gate:gate_that_fails_its_first_load"
    settings = _settings(tmp_settings, gate_factory=gate)
    ids = seed_shots(settings, 4)
    assert run_line(settings, progress=False, limit=2).counts == {"pending_review": 2}
    assert len(loads) == 2  # the host's attempt, then the cpu queue's gate
    first = _generations(settings, ids)
    assert len(first) == 2 and all(g.blob_key.startswith("raw/") for g in first.values())
    assert context_for(settings).host_gate_error == (
        "RuntimeError: CUDA out of memory while loading CLIP"
    )
    assert run_line(settings, progress=False).counts == {"pending_review": 2}
    assert len(loads) == 2 and len(_generations(settings, ids)) == 4  # not tried again


class _NoNsfwHereGate(PassThroughGate):
    """The stand-in gate, on a host where Open-NSFW is not installed: the brand that asks for
    it is refused the way ``ClipGate.policy_for`` refuses it."""

    def policy_for(self, brand: Any) -> str:
        if brand.name == "acme":
            raise GateModelError(
                "the brand asks for open_nsfw but it is not installed in /models: "
                "run `shotline gate install-nsfw`"
            )
        return super().policy_for(brand)


def no_nsfw_here_gate(settings: Settings) -> Gate:
    return _NoNsfwHereGate()


def test_a_gate_model_missing_fails_its_brands_shots_once_not_by_retries(
    tmp_settings: Settings, tmp_path: Path
) -> None:
    brands = tmp_path / "brands"
    shutil.copytree(tmp_settings.brands_dir, brands)
    (brands / "other.yaml").write_text((brands / "acme.yaml").read_text().replace("acme", "other"))
    gate = "tests.tasks.test_host_gate:no_nsfw_here_gate"
    settings = _settings(tmp_settings, gate_factory=gate, brands_dir=brands)
    refused = seed_shots(settings, 3)
    decided = seed_shots(settings, 2, brand="other")
    summary = run_line(settings, progress=False)
    # Before: the GateError was retried as a generic error, then left the shots in
    # ``generated`` with no reason anyone could read; the other brand's shots with them.
    assert summary.counts == {"failed": 3, "pending_review": 2}
    with context_for(settings).sessions() as s:
        rows = {sh.id: sh for sh in s.scalars(select(Shot).where(Shot.id.in_(refused + decided)))}
    for sid in refused:
        assert rows[sid].state == "failed" and rows[sid].error_kind == "model_load"
        assert "shotline gate install-nsfw" in (rows[sid].error or "")
        assert rows[sid].attempts <= 1
    assert {rows[sid].state for sid in decided} == {"pending_review"}
