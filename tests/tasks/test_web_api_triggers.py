"""``POST /api/verify`` (the CLI's ``verify --json`` report for an uploaded file, size- and
pixel-capped) and the plan/run triggers for a brand (``POST /api/brands/{name}/plan|run``:
counts back, work only enqueued), on the real app and database, the run on a real Redis."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from catalog.models import Brand, Shot
from pipeline.brand.loader import load_brand
from tasks.cli import app as cli_app
from tasks.web import verify as web_verify
from tasks.web.app import create_app
from tests.catalog.test_planning import add_product, tee_data
from tests.conftest import ROOT
from tests.factories import make_gated_shot, make_watermark
from tests.tasks.test_verify_cli import final_file
from tests.tasks.test_web_support import WebEnv, sqlite_url, web_env

REDIS_DB = 13  # this file's own: flushed before and after each run test


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WebEnv]:
    yield from web_env(sqlite_url(tmp_path), tmp_path)


def client_for(env: WebEnv) -> Iterator[TestClient]:
    app = create_app(env.settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.state.web.close()


@pytest.fixture
def client(env: WebEnv) -> Iterator[TestClient]:
    yield from client_for(env)


def bearer(env: WebEnv, name: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {env.token(name)[1]}"}


def one_line_error(r: object, status: int) -> str:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and "\n" not in body["error"]
    assert "Traceback" not in body["error"]
    return str(body["error"])


# --- verify ------------------------------------------------------------------------------


def watermarked_shot(env: WebEnv) -> tuple[int, bytes]:
    """A gated shot whose recorded final file is really watermarked with its id."""
    env.brand()

    def make(s: object) -> tuple[int, bytes]:
        shot = make_gated_shot(s, brand=s.get(Brand, env.brand_id), decision="rejected")  # type: ignore[attr-defined]
        data = final_file(env.tmp, shot.id).read_bytes()
        make_watermark(s, shot, data, env.store)  # type: ignore[arg-type]
        return shot.id, data

    return env.insert(make)  # type: ignore[no-any-return]


def test_verify_upload_answers_what_the_cli_prints(
    env: WebEnv, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    shot_id, data = watermarked_shot(env)
    r = client.post(
        "/api/verify", content=data, headers={**bearer(env), "Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["verified"] is True and report["shot_id"] == shot_id
    assert report["match"] == {"outcome": "exact", "recorded": "final image"}
    assert report["lineage"]["shot_id"] == shot_id
    # The same file through `shotline verify --json` on the same catalog: the same document.
    path = env.tmp / "upload.png"
    path.write_bytes(data)
    for name in [n for n in os.environ if n.startswith("SHOTLINE_")]:
        monkeypatch.delenv(name)
    s = env.settings
    cli_env = {
        "SHOTLINE_DATABASE_URL": s.database_url,
        "SHOTLINE_VAR_DIR": str(s.var_dir),
        "SHOTLINE_BLOB_ROOT": str(s.blob_root),
        "SHOTLINE_BLOB_BACKEND": "local",
        "SHOTLINE_BRANDS_DIR": str(s.brands_dir),
        "SHOTLINE_MODEL_CACHE_DIR": str(s.model_cache_dir),
        "SHOTLINE_DEVICE": "cpu",
    }
    monkeypatch.chdir(env.tmp)
    result = CliRunner().invoke(cli_app, ["verify", str(path), "--json"], env=cli_env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == report


def test_verify_refuses_non_images_bombs_and_oversize_uploads(
    env: WebEnv, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = bearer(env)
    err = one_line_error(client.post("/api/verify", content=b"not an image", headers=auth), 422)
    assert err.startswith("upload: ") and "image" in err
    assert "empty body" in one_line_error(client.post("/api/verify", headers=auth), 422)
    # 64 million pixels in a few KB: refused from the header, before any pixel is decoded.
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 100_000
    err = one_line_error(client.post("/api/verify", content=buf.getvalue(), headers=auth), 422)
    assert "pixels" in err
    monkeypatch.setattr(web_verify, "MAX_UPLOAD_BYTES", 1000)
    err = one_line_error(client.post("/api/verify", content=b"x" * 1001, headers=auth), 413)
    assert "limit is 1000" in err

    def chunked() -> Iterator[bytes]:  # no Content-Length: the stream itself is capped
        yield from [b"y" * 600, b"y" * 600]

    err = one_line_error(client.post("/api/verify", content=chunked(), headers=auth), 413)
    assert "over the limit of 1000" in err
    one_line_error(client.post("/api/verify", content=b"x"), 401)


# --- plan and run ------------------------------------------------------------------------


def acme_for(env: WebEnv, reviewers: str = "[alice]") -> None:
    """The sample brand, reviewed by ``reviewers``, with one product (4 colours) imported."""
    text = (ROOT / "samples" / "brands" / "acme.yaml").read_text(encoding="utf-8")
    path = env.settings.brands_dir / "acme.yaml"
    path.write_text(text.replace("reviewers: [demo]", f"reviewers: {reviewers}"), "utf-8")
    cfg = load_brand(path)
    env.insert(lambda s: add_product(s, cfg, "classic-tee", tee_data()))


def shot_count(env: WebEnv, state: str | None = None) -> int:
    with env.sessions() as s:
        stmt = select(func.count()).select_from(Shot)
        if state:
            stmt = stmt.where(Shot.state == state)
        return int(s.scalar(stmt) or 0)


def test_plan_trigger_plans_the_brand_and_answers_counts(env: WebEnv, client: TestClient) -> None:
    acme_for(env)
    assert "may not plan or run brand 'acme'" in one_line_error(
        client.post("/api/brands/acme/plan", headers=bearer(env, "bob")), 403
    )
    assert shot_count(env) == 0  # refused before anything was written
    r = client.post(
        "/api/brands/acme/plan", headers=bearer(env), json={"templates": ["hero_white"]}
    )
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["brand"] == "acme" and first["products"] == 1
    assert first["created"] == 4 == shot_count(env, "planned")  # one per colour
    again = client.post(
        "/api/brands/acme/plan", headers=bearer(env), json={"templates": ["hero_white"]}
    )
    assert (again.json()["created"], again.json()["existing"]) == (0, 4)
    assert "no-such" in one_line_error(
        client.post("/api/brands/acme/plan", headers=bearer(env), json={"templates": ["no-such"]}),
        422,
    )
    assert "unknown brand 'nope'" in one_line_error(
        client.post("/api/brands/nope/plan", headers=bearer(env)), 404
    )
    one_line_error(client.post("/api/brands/Bad.Name/plan", headers=bearer(env)), 422)


def test_run_trigger_enqueues_planned_shots_and_returns(env: WebEnv, client: TestClient) -> None:
    acme_for(env)
    assert client.post("/api/brands/acme/plan", headers=bearer(env)).status_code == 200
    planned = shot_count(env, "planned")
    # Embedded (no broker): the line would run inside the request, so run is refused.
    assert "no broker configured" in one_line_error(
        client.post("/api/brands/acme/run", headers=bearer(env)), 409
    )
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    r_db = redis.Redis.from_url(url)
    r_db.flushdb()
    env.settings = env.settings.model_copy(update={"broker_url": url})
    try:
        for c in client_for(env):
            assert "may not plan or run" in one_line_error(
                c.post("/api/brands/acme/run", headers=bearer(env, "bob")), 403
            )
            r = c.post("/api/brands/acme/run", headers=bearer(env), json={"limit": 3})
            assert r.status_code == 200, r.text
            assert r.json() == {"brand": "acme", "shots": 3, "messages": 1, "source_fetches": 0}
            queues = [k for k in r_db.keys("gpu.*") if r_db.type(k) == b"list"]
            assert sum(r_db.llen(k) for k in queues) == 1  # sent, not run
            assert shot_count(env, "planned") == planned  # nothing generated here
            rest = c.post("/api/brands/acme/run", headers=bearer(env)).json()
            assert rest["shots"] == planned and rest["messages"] >= 1
            assert "unknown brand 'other'" in one_line_error(
                c.post("/api/brands/other/run", headers=bearer(env)), 404
            )
    finally:
        r_db.flushdb()
