"""The review web app over HTTP (Starlette's TestClient, the real app and database): login
and sessions, CSRF, bearer tokens on the API, the CSP, escaping, the API's one-line errors,
and decisions through the catalog's review functions (brand reviewers, who decided)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tasks.web.app import CSP, create_app
from tests.tasks.test_web_support import WebEnv, sqlite_url, web_env

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WebEnv]:
    yield from web_env(sqlite_url(tmp_path), tmp_path)


@pytest.fixture
def client(env: WebEnv) -> Iterator[TestClient]:
    app = create_app(env.settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.state.web.close()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(client: TestClient, token: str) -> str:
    """Log in through the form; the CSRF token of the queue page."""
    page = client.get("/login")
    r = client.post("/login", data={"token": token, "csrf": csrf_of(page.text)})
    assert r.status_code == 200, r.text  # followed the redirect to the queue
    assert r.url.path == "/"
    return csrf_of(r.text)


def test_login_sets_a_strict_httponly_session_and_shows_the_queue(
    env: WebEnv, client: TestClient
) -> None:
    shot = env.gated(title=XSS)
    _, token = env.token("alice")
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    page = client.get("/login")
    r = client.post(
        "/login", data={"token": token, "csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    queue = client.get("/")
    assert f'id="shot-{shot}"' in queue.text
    assert queue.headers["content-security-policy"] == CSP
    assert "'self'" in CSP and "http" not in CSP
    # The catalog's title is text: escaped, never markup.
    assert XSS not in queue.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in queue.text
    assert "signed in as" in queue.text


def test_wrong_token_is_refused_and_logins_are_rate_limited(
    env: WebEnv, client: TestClient
) -> None:
    csrf = csrf_of(client.get("/login").text)
    for _ in range(10):
        r = client.post("/login", data={"token": "shl_nope", "csrf": csrf})
        assert r.status_code == 401
        assert "unknown, expired or revoked token" in r.text
    r = client.post("/login", data={"token": "shl_nope", "csrf": csrf})
    assert r.status_code == 429
    assert "too many failed logins" in r.text


def test_post_without_csrf_is_refused(env: WebEnv, client: TestClient) -> None:
    shot = env.gated()
    _, token = env.token("alice")
    login(client, token)
    r = client.post(f"/shots/{shot}/approve", data={})
    assert r.status_code == 403
    assert "CSRF" in r.text
    r = client.post(f"/api/shots/{shot}/approve", json={})  # session, no X-CSRF-Token
    assert r.status_code == 403
    assert r.json() == {"error": "missing or wrong CSRF token; reload the page and try again"}
    assert env.state(shot) == "pending_review"
    assert env.events(shot) == []


def test_form_approve_records_the_authenticated_name(env: WebEnv, client: TestClient) -> None:
    shot = env.gated()
    token_id, token = env.token("alice")
    csrf = login(client, token)
    r = client.post(f"/shots/{shot}/approve", data={"csrf": csrf})
    assert r.status_code == 200
    assert f"approved shot {shot} as alice" in r.text
    assert env.state(shot) == "published"  # embedded: approval publishes in-process
    assert env.events(shot) == [("approve", "alice", f"token:{token_id}", None)]


def test_bearer_api_decides_and_unlisted_reviewer_is_refused(
    env: WebEnv, client: TestClient
) -> None:
    a, b = env.gated(), env.gated()
    _, alice = env.token("alice")
    _, zed = env.token("zed")  # not in the brand's reviewers: list
    r = client.post(f"/api/shots/{a}/reject", json={"reason": "wrong colour"}, headers=bearer(zed))
    assert r.status_code == 403
    assert r.json()["error"].startswith("'zed' may not review brand 'acme'")
    r = client.post(
        f"/api/shots/{a}/reject", json={"reason": "wrong colour"}, headers=bearer(alice)
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "rejected" and r.json()["reviewer"] == "alice"
    # Deciding it again names who did.
    r = client.post(f"/api/shots/{a}/approve", json={}, headers=bearer(alice))
    assert r.status_code == 422
    r = client.post(f"/api/shots/{a}/reject", json={"reason": "x"}, headers=bearer(alice))
    assert r.status_code == 409
    assert r.json() == {"error": f"shot {a}: already rejected by 'alice'"}
    listed = client.get("/api/shots", headers=bearer(alice)).json()
    assert [s["id"] for s in listed["shots"]] == [b]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_revoked_token_ends_its_session_and_its_bearer_use(env: WebEnv, client: TestClient) -> None:
    env.gated()
    token_id, token = env.token("alice")
    login(client, token)
    assert client.get("/api/me").json()["name"] == "alice"
    env.revoke(token_id)
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    r = client.get("/api/shots", headers=bearer(token))
    assert r.status_code == 401
    assert r.json() == {"error": "not authenticated: invalid, expired or revoked token"}


def test_api_errors_are_one_line_json(env: WebEnv, client: TestClient) -> None:
    _, token = env.token("alice")
    h = bearer(token)
    r = client.get("/api/shots/999999", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "shot 999999: no such shot"})
    r = client.get("/api/shots?limit=abc", headers=h)
    assert r.status_code == 422 and set(r.json()) == {"error"}
    assert "\n" not in r.json()["error"] and "Traceback" not in r.text
    r = client.post("/api/shots/1/reject", content=b"{not json", headers=h)
    assert r.status_code == 422 and set(r.json()) == {"error"}
    r = client.get("/api/nope", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "Not Found"})
    schema = client.get("/api/openapi.json").json()
    assert "/api/shots/{shot_id}/approve" in schema["paths"]
    assert "/login" not in schema["paths"]


def test_thumbnail_is_a_384px_webp_made_once(env: WebEnv, client: TestClient) -> None:
    import io

    from PIL import Image

    from tests.factories import noise_png

    shot = env.gated(final=noise_png(1, size=1024))
    _, token = env.token("alice")
    login(client, token)
    state = client.app.state.web  # type: ignore[attr-defined]
    first = client.get(f"/thumbs/{shot}.webp")
    assert first.headers["content-type"] == "image/webp"
    im = Image.open(io.BytesIO(first.content))
    assert im.format == "WEBP" and max(im.size) == 384
    second = client.get(f"/thumbs/{shot}.webp")
    assert second.content == first.content
    assert state.thumbs.made == 1


def test_logout_ends_a_copied_session_cookie_and_the_token_logs_in_again(
    env: WebEnv, client: TestClient
) -> None:
    env.gated()
    _, token = env.token("alice")
    csrf = login(client, token)
    copied = dict(client.cookies)  # what a stolen or shared cookie would carry
    assert client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    # Before: the signed cookie was only cleared in this browser; a copy of it stayed good
    # for its 12 h.
    app = client.app
    with TestClient(app, raise_server_exceptions=False, cookies=copied) as other:
        assert other.get("/", follow_redirects=False).headers["location"] == "/login"
        assert other.get("/api/me").status_code == 401
    # The token itself is not revoked: a new login works, and its session is good.
    login(client, token)
    assert client.get("/api/me").json()["name"] == "alice"
    # A session made before that login and one made after a newer logout are both ended.
    with TestClient(app, raise_server_exceptions=False, cookies=copied) as other:
        assert other.get("/api/me").status_code == 401
