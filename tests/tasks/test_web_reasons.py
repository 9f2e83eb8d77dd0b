"""Per-brand reject reasons: ``review: {reject_reasons: [...]}`` in the brand YAML is what
the web picker offers (plus free text) and what ``GET /api/shots/{id}`` reports; the file is
read as it is now, like ``reviewers:``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session

from catalog.models import Brand
from pipeline.brand.config import BrandConfig
from pipeline.brand.loader import load_brand
from tasks.web.app import create_app
from tasks.web.reasons import DEFAULT_REJECT_REASONS
from tests.conftest import ROOT
from tests.tasks.test_web_auth import login
from tests.tasks.test_web_support import WebEnv, sqlite_url, web_env

ACME = ROOT / "samples" / "brands" / "acme.yaml"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WebEnv]:
    yield from web_env(sqlite_url(tmp_path), tmp_path)


@pytest.fixture
def client(env: WebEnv) -> Iterator[TestClient]:
    app = create_app(env.settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.state.web.close()


def write_brand(env: WebEnv, reasons: list[str] | None) -> Path:
    """acme.yaml in the app's brands folder, reviewed by alice, with ``reasons`` if given."""
    text = ACME.read_text(encoding="utf-8").replace("reviewers: [demo]", "reviewers: [alice]")
    if reasons is not None:
        items = ", ".join(f'"{r}"' for r in reasons)
        text += f"\nreview:\n  reject_reasons: [{items}]\n"
    path = env.settings.brands_dir / "acme.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def options(html: str, shot: int) -> list[str]:
    m = re.search(rf'<select name="reason" id="reason-{shot}"[^>]*>(.*?)</select>', html, re.S)
    assert m, html[:800]
    return re.findall(r'<option value="([^"]*)"', m.group(1))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_reasons_validate_and_leave_the_digest_alone_when_unset() -> None:
    acme = load_brand(ACME)
    assert acme.review is None and "review" not in acme.to_json()
    raw = acme.to_json()
    with_reasons = BrandConfig.model_validate(
        {**raw, "review": {"reject_reasons": ["  blurry\tedge ", "wrong colour"]}}
    )
    assert with_reasons.review is not None
    assert with_reasons.review.reject_reasons == ["blurry edge", "wrong colour"]
    assert with_reasons.digest() != acme.digest()
    for bad, why in (
        ([""], "reason 1 is empty"),
        (["x" * 121], "over 120 characters"),
        ([f"r{i}" for i in range(31)], "at most 30"),
        (["Blurry", "blurry"], "listed twice"),
        (["ok\x07bell"], "control characters"),
        ([3], "valid string"),
    ):
        with pytest.raises(ValidationError, match=why):
            BrandConfig.model_validate({**raw, "review": {"reject_reasons": bad}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        BrandConfig.model_validate({**raw, "review": {"reasons": ["x"]}})


def test_the_brands_reasons_reach_the_api_and_the_picker(env: WebEnv, client: TestClient) -> None:
    shot = env.gated()
    _, alice = env.token("alice")
    write_brand(env, ["blurry", "wrong colour", "<b>smudge</b>"])

    r = client.get(f"/api/shots/{shot}", headers=bearer(alice))
    assert r.status_code == 200, r.text
    assert r.json()["reject_reasons"] == ["blurry", "wrong colour", "<b>smudge</b>"]

    login(client, alice)
    for page in ("/", f"/shots/{shot}"):
        html = client.get(page).text
        # The brand's list, then "other (type it)" (the free-text field stays beside it).
        assert options(html, shot) == ["blurry", "wrong colour", "&lt;b&gt;smudge&lt;/b&gt;", ""]
        assert f'id="note-{shot}"' in html

    # A listed reason and a typed one both reject (through the API, as the picker's JS does).
    other = env.gated()
    assert (
        client.post(
            f"/api/shots/{shot}/reject", json={"reason": "blurry"}, headers=bearer(alice)
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/api/shots/{other}/reject", json={"reason": "shadow cut off"}, headers=bearer(alice)
        ).status_code
        == 200
    )
    assert env.events(shot)[-1][3] == "blurry"
    assert env.events(other)[-1][3] == "shadow cut off"


def test_an_edit_to_the_file_shows_at_the_next_request(env: WebEnv, client: TestClient) -> None:
    shot = env.gated()
    _, alice = env.token("alice")

    def reasons() -> list[str]:
        r = client.get(f"/api/shots/{shot}", headers=bearer(alice))
        assert r.status_code == 200, r.text
        return list(r.json()["reject_reasons"])

    assert reasons() == list(DEFAULT_REJECT_REASONS)  # no file, nothing stored: the defaults
    path = write_brand(env, ["blurry"])
    assert reasons() == ["blurry"]
    write_brand(env, ["blurry", "too dark"])
    assert reasons() == ["blurry", "too dark"]
    # A file that no longer loads never breaks the page: the stored config, else the defaults.
    path.write_text("name: acme\nreview: {reject_reasons: ['']}\n", encoding="utf-8")
    assert reasons() == list(DEFAULT_REJECT_REASONS)


def test_without_a_file_the_stored_config_gives_the_reasons(
    env: WebEnv, client: TestClient
) -> None:
    shot = env.gated()
    _, alice = env.token("alice")

    def store(s: Session) -> None:
        brand = s.get(Brand, env.brand_id)
        assert brand is not None
        brand.config = {**brand.config, "review": {"reject_reasons": ["from the last plan"]}}

    env.insert(store)
    r = client.get(f"/api/shots/{shot}", headers=bearer(alice))
    assert r.json()["reject_reasons"] == ["from the last plan"]
