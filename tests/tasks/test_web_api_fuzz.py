"""The review app's JSON API fuzzed with schemathesis against its own schema
(``/api/openapi.json``), in process (ASGI), on a Postgres catalog with a few gated shots and a
reviewer's bearer token, so requests get past authentication into the handlers.

Whatever the input: no 5xx, no stack trace in any response, and every error under ``/api/``
is the one-line ``{"error": ...}``. Derandomized (the same examples every run) and bounded
(``MAX_EXAMPLES`` per operation, about 30 s in all)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tasks.web.app import create_app
from tests.conftest import create_pg_database, drop_pg_database_later
from tests.tasks.test_web_support import WebEnv, web_env

MAX_EXAMPLES = 60
TRACE_MARKS = ("Traceback (most recent call last)", 'File "/', "sqlalchemy.", "psycopg")


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    url = create_pg_database("shotline_fuzz")
    try:
        env_iter = web_env(url, tmp_path_factory.mktemp("fuzz"))
        env = next(env_iter)
        for i in range(3):
            env.gated(title=f"Fuzz Cushion {i}")
        yield env
        env_iter.close()
    finally:
        drop_pg_database_later(url)


@pytest.fixture(scope="module")
def fuzz_app(fuzz_env: WebEnv) -> Iterator[Any]:
    app = create_app(fuzz_env.settings)
    yield app
    app.state.web.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/api/openapi.json", fuzz_app)


@pytest.fixture(scope="module")
def auth(fuzz_env: WebEnv) -> dict[str, str]:
    return {"Authorization": f"Bearer {fuzz_env.token('alice')[1]}"}


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # seeded: the same examples on every run
    database=None,
    suppress_health_check=list(HealthCheck),
)


def check_response(case: Any, auth: dict[str, str]) -> None:
    response = case.call(headers=auth)
    text = response.text
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{where}: {response.status_code} {text[:300]}"
    for mark in TRACE_MARKS:
        assert mark not in text, f"{where}: {mark!r} in the response: {text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, f"{where}: {text[:300]}"
        assert body["error"] and "\n" not in body["error"]


def test_api_never_answers_5xx_or_a_stack_trace(api_schema: Any, auth: dict[str, str]) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    for op in operations:

        @FUZZ
        @given(case=op.as_strategy())
        def fuzz(case: Any) -> None:
            check_response(case, auth)

        fuzz()


def test_schema_lists_the_whole_api(api_schema: Any) -> None:
    """The fuzzing above covers every endpoint of issue 28, verify and the triggers too."""
    paths = {op.ok().path for op in api_schema.get_all_operations()}
    assert {
        "/api/shots",
        "/api/shots/{shot_id}",
        "/api/shots/{shot_id}/approve",
        "/api/shots/{shot_id}/reject",
        "/api/shots/{shot_id}/pick",
        "/api/status",
        "/api/lineage/{ref}",
        "/api/verify",
        "/api/brands/{name}/plan",
        "/api/brands/{name}/run",
    } <= paths
