"""The worker metrics endpoint, scraped over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasks import metrics
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server_port() -> Iterator[int]:
    assert not metrics.multiprocess_enabled(), "tests expect single-process mode"
    port = free_port()
    assert metrics.start_metrics_server(port, addr="127.0.0.1") is True
    yield port
    metrics.stop_metrics_server(port)


def test_recorded_events_are_served_over_http(server_port: int) -> None:
    # Counters are process-global, so assert on the change across the recorded events.
    before = _scrape(server_port)

    metrics.record_generated(3)
    metrics.record_generated(0)  # a batch where every shot failed adds nothing
    metrics.record_gated("pending_review", [])
    metrics.record_gated("rejected", ["competitor: Nike 0.41 >= 0.30", "competitor: Globex 0.5"])
    metrics.record_gated("rejected", ["safety:nsfw 0.9", "product_match 0.05 < 0.15"])
    metrics.record_gated("rejected", [])
    metrics.record_published(2)
    metrics.observe_batch(1.5)
    metrics.observe_batch(42.0)

    after = _scrape(server_port)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("shotline_images_generated_total") == 3
    assert delta("shotline_images_gated_total") == 4
    # Two competitor reasons on one image count that image once under "competitor".
    assert delta("shotline_images_rejected_total", reason="competitor") == 1
    assert delta("shotline_images_rejected_total", reason="safety") == 1
    assert delta("shotline_images_rejected_total", reason="product_match") == 1
    assert delta("shotline_images_rejected_total", reason="unspecified") == 1
    assert delta("shotline_images_published_total") == 2
    assert delta("shotline_batch_seconds_count") == 2
    assert delta("shotline_batch_seconds_sum") == pytest.approx(43.5)
    assert delta("shotline_batch_seconds_bucket", le="2.0") == 1
    assert delta("shotline_batch_seconds_bucket", le="60.0") == 2
    # No GPU peak gauge: nothing reports one (the generator's timings carry no memory figure).
    assert not any(name.startswith("shotline_gpu") for name, _ in after)


def test_starting_twice_on_one_port_is_a_no_op(server_port: int) -> None:
    assert metrics.start_metrics_server(server_port, addr="127.0.0.1") is False
    assert "shotline_images_published_total" in metrics.metrics_text().decode()


def test_port_taken_by_another_program_raises_in_single_process_mode() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            metrics.start_metrics_server(s.getsockname()[1], addr="127.0.0.1")


def test_reason_labels_stay_bounded() -> None:
    assert metrics.reason_label("Competitor: Nike") == "competitor"
    assert metrics.reason_label("   ") == "unspecified"
    assert metrics.reason_label("<script>alert(1)</script>") == "script"
    assert len(metrics.reason_label("x" * 500)) == 40


_CHILD = textwrap.dedent(
    """
    import sys, time
    from tasks import metrics
    role, port = sys.argv[1], int(sys.argv[2])
    metrics.record_generated(int(sys.argv[3]))
    metrics.record_gated("rejected", ["safety: nsfw"])
    started = metrics.start_metrics_server(port, addr="127.0.0.1")
    print("serving" if started else "sibling", flush=True)
    if role == "server":
        time.sleep(30)
    """
)


def test_multiprocess_mode_aggregates_prefork_children(tmp_path: Path) -> None:
    """Two worker processes share a PROMETHEUS_MULTIPROC_DIR; one scrape shows both."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    port = free_port()
    cmd = [sys.executable, "-c", _CHILD]
    server = subprocess.Popen(
        [*cmd, "server", str(port), "2"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "serving"
        # A second "child" binding the same port leaves serving to the first, without error.
        sibling = subprocess.run(
            [*cmd, "child", str(port), "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sibling.returncode == 0, sibling.stderr
        assert sibling.stdout.strip() == "sibling"

        deadline = time.monotonic() + 10
        while True:
            samples = _scrape(port)
            if (
                _value(samples, "shotline_images_generated_total") == 5
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.2)
        assert _value(samples, "shotline_images_generated_total") == 5
        assert _value(samples, "shotline_images_gated_total") == 2
        assert _value(samples, "shotline_images_rejected_total", reason="safety") == 2
    finally:
        server.kill()
        server.wait(timeout=10)


def test_start_worker_metrics_follows_the_metrics_port_setting() -> None:
    from pipeline.settings import Settings

    assert metrics.start_worker_metrics(Settings(metrics_port=None)) is False
    port = free_port()
    assert metrics.start_worker_metrics(Settings(metrics_port=port)) is True
    try:
        assert ("shotline_images_published_total", ()) in _scrape(port)
    finally:
        metrics.stop_metrics_server(port)
