"""docker/compose.yaml agrees with the code: images, settings names, CLI, queues and tasks.

There is no Docker engine on CI machines, so the stack is checked statically: the file is
parsed with PyYAML (anchors and ``<<`` merges resolved), compose's ``${VAR:-default}``
interpolation is applied with the defaults, and every name it uses is looked up in the real
objects: ``Settings.model_fields``, the Typer CLI, and the Celery app's tasks and routes.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ONE_SHOT = {"migrate", "minio-init", "cli"}  # jobs that exit; no healthcheck, no restart

# ${NAME}, ${NAME:-default}, ${NAME-default}; "$$" is a literal "$" for the container's shell.
_INTERP = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(value: str, used: set[str] | None = None) -> str:
    """Compose's interpolation with every variable unset, so defaults apply."""

    def sub(m: re.Match[str]) -> str:
        if used is not None:
            used.add(m.group("name"))
        return m.group("default") or ""

    return _INTERP.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def _walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(k)
            yield from _walk_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_strings(v)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data.get("services"), "compose.yaml has no services"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    return [interpolate(str(c)) for c in cmd]


def celery_services(services: dict[str, dict[str, Any]], sub: str) -> dict[str, list[str]]:
    """Services whose command is ``celery -A ... <sub>``, with the interpolated command."""
    found = {}
    for name, svc in services.items():
        cmd = command_of(svc)
        if cmd[:1] == ["celery"] and sub in cmd:
            found[name] = cmd
    return found


def option(cmd: list[str], *names: str) -> str | None:
    for i, arg in enumerate(cmd):
        for n in names:
            if arg == n and i + 1 < len(cmd):
                return cmd[i + 1]
            if arg.startswith(n + "="):
                return arg.split("=", 1)[1]
    return None


def env_file_lines(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# --- images and builds ----------------------------------------------------------------------


def _assert_pinned(image: str, where: str) -> None:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    assert tag, f"{where}: image {image!r} has no tag"
    assert tag != "latest", f"{where}: image {image!r} uses the moving 'latest' tag"
    assert name


def _dockerfile_bases(dockerfile: Path) -> list[str]:
    """FROM images of a Dockerfile, with ARG defaults substituted; build stages excluded."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases = []
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if m := re.match(r"ARG\s+(\w+)=(\S+)", line):
            args.setdefault(m.group(1), m.group(2))
        elif m := re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I):
            image = re.sub(r"\$\{?(\w+)\}?", lambda a: args.get(a.group(1), ""), m.group(1))
            if image not in stages:
                bases.append(image)
            if m.group(2):
                stages.add(m.group(2))
    return bases


def test_every_service_has_a_pinned_image_or_an_existing_build(
    services: dict[str, dict[str, Any]],
) -> None:
    dockerfiles = set()
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"service {name} has neither image nor build"
        if "image" in svc:
            _assert_pinned(interpolate(svc["image"]), f"service {name}")
        if "build" in svc:
            build = svc["build"]
            context = (DOCKER / interpolate(build["context"])).resolve()
            assert context.is_dir(), f"service {name}: build context {context} is missing"
            dockerfile = context / interpolate(build.get("dockerfile", "Dockerfile"))
            assert dockerfile.is_file(), f"service {name}: {dockerfile} is missing"
            dockerfiles.add(dockerfile)
    assert {p.name for p in dockerfiles} == {"Dockerfile.app", "Dockerfile.worker-gpu"}
    # Both builds use the repository root as context; its .dockerignore must keep what they copy.
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var", ".env"} <= ignored
    for dockerfile in dockerfiles:
        bases = _dockerfile_bases(dockerfile)
        assert bases, f"{dockerfile.name} has no FROM"
        for base in bases:
            _assert_pinned(base, dockerfile.name)
        # Paths the Dockerfile copies from the build context must exist in the repository.
        for m in re.finditer(
            r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", dockerfile.read_text(), re.M
        ):
            for src in m.group(1).split():
                assert (ROOT / src).exists(), f"{dockerfile.name}: COPY source {src} is missing"
                assert src.rstrip("/") not in ignored, f"{dockerfile.name}: {src} is dockerignored"


def test_gpu_image_is_cuda_and_images_run_unprivileged() -> None:
    gpu = (DOCKER / "Dockerfile.worker-gpu").read_text()
    assert any(
        b.startswith("nvidia/cuda:") for b in _dockerfile_bases(DOCKER / "Dockerfile.worker-gpu")
    )
    assert "--pool solo" in gpu
    for name in ("Dockerfile.app", "Dockerfile.worker-gpu"):
        users = re.findall(r"^USER\s+(\S+)", (DOCKER / name).read_text(), re.M)
        assert users and users[-1].split(":")[0] not in {"root", "0"}, f"{name} runs as root"


# --- settings -------------------------------------------------------------------------------


def test_shotline_env_names_are_settings_fields(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    used: set[str] = set()
    # Keys set in any environment block, anchors included (they are walked as plain strings).
    for text in _walk_strings(compose):
        interpolate(text, used)
        used.update(re.findall(r"\bSHOTLINE_[A-Z0-9_]+(?==|$)", text))
    for svc in compose["services"].values():
        used.update(env_of(svc))
    used.update(env_file_lines(DOCKER / "shotline.env.example"))
    for dockerfile in DOCKER.glob("Dockerfile.*"):
        used.update(re.findall(r"\b(SHOTLINE_[A-Z0-9_]+)=", dockerfile.read_text()))
    names = {n for n in used if n.startswith("SHOTLINE_")}
    assert len(names) >= 10, names
    unknown = sorted(n for n in names if n.removeprefix("SHOTLINE_").lower() not in fields)
    assert not unknown, f"not fields of pipeline.settings.Settings: {unknown}"


def test_each_service_environment_builds_valid_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = env_file_lines(DOCKER / "shotline.env.example")
    checked = 0
    for name, svc in services.items():
        env = {k: v for k, v in env_of(svc).items() if k.startswith("SHOTLINE_")}
        if not env:
            continue
        for key in list(Settings.model_fields):
            monkeypatch.delenv(f"SHOTLINE_{key.upper()}", raising=False)
        for key, value in {**example, **env}.items():
            monkeypatch.setenv(key, value)
        s = Settings(_env_file=None)  # type: ignore[call-arg]
        # The stack is the distributed deployment: broker, Postgres and S3, never embedded.
        assert not s.embedded, name
        assert s.database_url.startswith("postgresql"), name
        assert s.blob_backend == "s3" and s.s3_endpoint_url, name
        checked += 1
    assert checked >= 4


# --- CLI, queues and tasks ------------------------------------------------------------------


def _celery_module() -> Any:
    """tasks.celery_app with its task modules imported, as a starting worker does."""
    from tasks import celery_app as ca

    ca.app.loader.import_default_modules()
    return ca


def test_migration_job_runs_a_real_cli_command(services: dict[str, dict[str, Any]]) -> None:
    from tasks.cli import app

    cmd = command_of(services["migrate"])
    assert cmd[0] == "shotline", cmd
    group: Any = typer.main.get_command(app)
    for word in cmd[1:]:
        assert word in group.commands, f"`{' '.join(cmd)}`: no command {word!r}"
        group = group.commands[word]
    assert cmd[1:] == ["db", "upgrade"]
    for name in services:
        if name not in {"postgres", "migrate"} and command_of(services[name])[:1] == ["celery"]:
            deps = services[name].get("depends_on", {})
            if name in {"flower"}:
                continue
            assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", (
                f"{name} must wait for the migration job"
            )


def test_commands_name_the_real_celery_app_queues_and_tasks(
    services: dict[str, dict[str, Any]],
) -> None:
    from tasks.dispatch import model_key

    ca = _celery_module()
    app = ca.app
    workers = celery_services(services, "worker")
    assert {"worker-cpu", "worker-gpu"} <= set(workers)

    consumed: set[str] = set()
    for name, cmd in workers.items():
        assert option(cmd, "-A", "--app") == "tasks.celery_app", name
        queues = (option(cmd, "-Q", "--queues") or "").split(",")
        declared = {q.name for q in app.conf.task_queues}
        for q in queues:
            assert q in declared or q.startswith("gpu."), f"{name}: unknown queue {q!r}"
        consumed.update(queues)

    # The GPU worker serves its model's queue: gpu.<model_key(SHOTLINE_MODEL)>, solo pool.
    gpu_cmd = workers["worker-gpu"]
    gpu_env = env_of(services["worker-gpu"])
    assert option(gpu_cmd, "-P", "--pool") == "solo"
    assert option(gpu_cmd, "-Q", "--queues") == ca.gpu_queue(model_key(gpu_env["SHOTLINE_MODEL"]))
    assert option(workers["worker-cpu"], "-P", "--pool") in {"prefork", "solo", "threads"}

    # Every shotline task lands on a queue some worker consumes.
    registered = {n for n in app.tasks if n.startswith("shotline.")}
    expected = {
        "shotline.generate_batch",
        "shotline.gate_shot",
        "shotline.publish_shot",
        "shotline.import_catalog",
        "shotline.ingest_due_catalogs",
    }
    assert expected <= registered, expected - registered
    for task in sorted(registered):
        if task == ca.TASK_GENERATE:
            continue  # sent with queue=gpu.<model-key> by tasks.dispatch, checked above
        queue = app.amqp.router.route({}, task)["queue"].name
        assert queue in consumed, f"{task} routes to {queue!r}, which no worker consumes"


def test_exactly_one_beat_whose_schedule_names_real_tasks(
    services: dict[str, dict[str, Any]],
) -> None:
    ca = _celery_module()
    beats = celery_services(services, "beat")
    assert list(beats) == ["beat"], f"exactly one scheduler service, got {list(beats)}"
    assert services["beat"].get("deploy", {}).get("replicas") == 1
    assert option(beats["beat"], "-A", "--app") == "tasks.celery_app"
    workers = celery_services(services, "worker")
    consumed = {
        q for cmd in workers.values() for q in (option(cmd, "-Q", "--queues") or "").split(",")
    }
    schedule = ca.app.conf.beat_schedule
    assert schedule, "the beat service has nothing to schedule"
    for entry in schedule.values():
        assert entry["task"] in ca.app.tasks, f"beat schedules unknown task {entry['task']}"
        queue = entry.get("options", {}).get("queue") or (
            ca.app.amqp.router.route({}, entry["task"])["queue"].name
        )
        assert queue in consumed, f"beat sends {entry['task']} to unconsumed queue {queue!r}"


# --- the shape of the deployment -----------------------------------------------------------


def test_long_running_services_have_healthchecks_and_restart(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart", "no") == "no", f"{name} is a one-shot job"
            continue
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"service {name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", name


def test_gpu_worker_reserves_an_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "deploy" not in services["worker-cpu"] or "reservations" not in services["worker-cpu"][
        "deploy"
    ].get("resources", {})


def test_volumes_are_named_and_inputs_are_read_only(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        env = env_of(svc)
        mounts: dict[str, tuple[str, str]] = {}
        for spec in svc.get("volumes") or []:
            parts = interpolate(spec).split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            mounts[target] = (source, mode)
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source!r} is not declared"
        if any(k.startswith("SHOTLINE_") for k in env):
            for target in ("/srv/shotline/models", "/srv/shotline/loras", "/srv/shotline/brands"):
                assert mounts.get(target, ("", ""))[1] == "ro", f"{name}: {target} must be :ro"
            # The Hugging Face cache and the model cache persist on named volumes.
            assert mounts[env["HF_HOME"]][0] in declared, name
            assert mounts[env["SHOTLINE_MODEL_CACHE_DIR"]][0] in declared, name
            assert env["SHOTLINE_BRANDS_DIR"] == "/srv/shotline/brands"
    for data in ("pgdata", "minio-data", "redis-data"):
        assert data in declared


def test_bucket_init_job_creates_the_bucket_the_workers_use(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["minio-init"]
    script = " ".join(command_of(init))
    assert "mc mb --ignore-existing" in script
    bucket_var = env_of(init)["S3_BUCKET"]
    for name in ("worker-cpu", "worker-gpu", "migrate", "beat"):
        assert env_of(services[name])["SHOTLINE_S3_BUCKET"] == bucket_var, name
        if name != "migrate":  # the schema does not need the bucket; everything else does
            deps = services[name]["depends_on"]
            assert deps["minio-init"]["condition"] == "service_completed_successfully", name


def test_prometheus_scrapes_the_port_the_workers_serve(services: dict[str, dict[str, Any]]) -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["dns_sd_configs"][0]
    for name in targets["names"]:
        env = env_of(services[name])
        assert int(env["SHOTLINE_METRICS_PORT"]) == targets["port"], name
        assert str(targets["port"]) in [str(p) for p in services[name]["expose"]]


def test_a_worker_with_a_metrics_port_serves_metrics_from_worker_init(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU worker's healthcheck and Prometheus both rely on this endpoint being up."""
    import urllib.request

    from celery.signals import worker_init

    from tasks import metrics
    from tests.conftest import free_port

    assert env_of(services["worker-gpu"])["SHOTLINE_METRICS_PORT"]
    port = free_port()
    monkeypatch.setenv("SHOTLINE_METRICS_PORT", str(port))

    class PreforkWorker:  # what worker_init's sender looks like, minus a real pool
        pool_cls = "celery.concurrency.prefork:TaskPool"
        hostname = "cpu@test"

    ca = _celery_module()
    try:
        worker_init.send(sender=PreforkWorker(), app=ca.app)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                body = resp.read()
        except OSError as exc:
            pytest.fail(
                "no metrics endpoint after worker_init: tasks.celery_app must call "
                f"tasks.metrics.start_worker_metrics(Settings()) from worker_init ({exc})"
            )
        assert b"shotline_images_generated_total" in body
    finally:
        metrics.stop_metrics_server(port)
