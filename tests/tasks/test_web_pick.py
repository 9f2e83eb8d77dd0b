"""Pick 1 of N: a template's ``candidates: N`` plans N seeded shots per slot; picking one
(``shotline review pick`` or the web) approves it and rejects the others "not picked", in one
transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from catalog.models import Brand, ReviewerToken, Shot
from catalog.planning import plan_shots
from pipeline.brand.config import BrandConfig, TemplateSpec
from pipeline.brand.loader import load_brand
from pipeline.brand.seeds import derive_seed
from pipeline.settings import Settings
from tasks.cli import app as cli_app
from tasks.context import reset_contexts
from tasks.web.app import create_app
from tests.catalog.test_planning import add_product, tee_data
from tests.conftest import ROOT
from tests.factories import (
    make_filter_result,
    make_generation,
    make_product,
    make_shot,
    make_watermark,
)
from tests.tasks.test_web_support import WebEnv, sqlite_url, web_env


def with_candidates(cfg: BrandConfig, template: str, n: int) -> BrandConfig:
    spec = cfg.templates[template].model_copy(update={"candidates": n})
    return cfg.model_copy(update={"templates": {**cfg.templates, template: spec}})


def test_candidates_plan_n_seeded_shots_per_slot(session: Session, tmp_settings: Settings) -> None:
    acme = load_brand(ROOT / "samples" / "brands" / "acme.yaml")
    cfg = with_candidates(acme, "hero_white", 4)
    add_product(session, cfg, "classic-tee", tee_data())
    summary = plan_shots(session, cfg, tmp_settings, templates=["hero_white"])
    shots = list(session.scalars(select(Shot).where(Shot.id.in_(summary.shots))))
    assert len(shots) == 4 * 4  # 4 colours x 4 candidates
    for s in shots:
        assert s.seed == derive_seed(
            "acme", "classic-tee", s.variant_key, "hero_white", 1, candidate=s.candidate
        )
    assert {s.candidate for s in shots} == {0, 1, 2, 3}
    assert len({s.seed for s in shots}) == 16
    # Candidate 0 keeps the seed the slot always had (the literal of test_planning).
    red0 = next(s for s in shots if s.variant_key == "Color=Red" and s.candidate == 0)
    assert red0.seed == 8019836235293601982
    again = plan_shots(session, cfg, tmp_settings, templates=["hero_white"])
    assert (again.created, again.existing) == (0, 16)
    # Two more candidates add two shots per slot; the first four are kept.
    more = plan_shots(
        session, with_candidates(acme, "hero_white", 6), tmp_settings, templates=["hero_white"]
    )
    assert (more.created, more.existing) == (8, 16)


@pytest.mark.parametrize("n", [0, 9])
def test_candidates_are_bounded(n: int) -> None:
    with pytest.raises(ValidationError, match="candidates"):
        TemplateSpec(prompt="x", candidates=n)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WebEnv]:
    yield from web_env(sqlite_url(tmp_path), tmp_path)


def slot_of_four(env: WebEnv, gate_rejects: int = 3) -> list[int]:
    """Four candidates of one slot, gated; candidate ``gate_rejects`` the gate rejected."""
    env.brand()

    def make(s: Session) -> list[int]:
        brand = s.get(Brand, env.brand_id)
        assert brand is not None
        rev = make_product(s, brand, "SKU-PICK", title="Linen Cushion")
        ids = []
        for k in range(4):
            state = "rejected" if k == gate_rejects else "pending_review"
            shot = make_shot(s, rev, state=state, candidate=k)
            make_generation(s, shot, store=env.store)
            make_filter_result(s, shot, state)
            make_watermark(s, shot, store=env.store)
            ids.append(shot.id)
        return ids

    return list(env.insert(make))


def test_web_pick_approves_one_and_rejects_the_others(env: WebEnv) -> None:
    ids = slot_of_four(env)
    _, token = env.token("alice")
    _, zed = env.token("zed")
    app = create_app(env.settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(f"/api/shots/{ids[1]}/pick", headers={"Authorization": f"Bearer {zed}"})
        assert r.status_code == 403
        assert [env.state(i) for i in ids] == ["pending_review"] * 3 + ["rejected"]
        r = client.post(f"/api/shots/{ids[1]}/pick", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["picked"], body["rejected"], body["group"]) == (ids[1], [ids[0], ids[2]], ids)
        page = client.get(
            "/api/shots?status=rejected", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert page["shots"][0]["group_size"] == 4
    app.state.web.close()
    assert [env.state(i) for i in ids] == ["rejected", "published", "rejected", "rejected"]
    assert env.events(ids[1])[0][:2] == ("approve", "alice")
    assert env.events(ids[1])[0][3] == "picked: candidate 2 of 4"
    for other in (ids[0], ids[2]):
        assert [(a, who, note) for a, who, _, note in env.events(other)] == [
            ("reject", "alice", "not picked")
        ]
    assert env.events(ids[3]) == []  # the gate's rejection stands, no review event


def test_cli_pick(env: WebEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = slot_of_four(env, gate_rejects=-1)
    for name in [n for n in __import__("os").environ if n.startswith("SHOTLINE_")]:
        monkeypatch.delenv(name)
    s = env.settings
    for key, value in {
        "DATABASE_URL": s.database_url,
        "VAR_DIR": str(s.var_dir),
        "BLOB_ROOT": str(s.blob_root),
        "BRANDS_DIR": str(s.brands_dir),
        "MODEL_CACHE_DIR": str(s.model_cache_dir),
        "REVIEW_FREE_NAMES": "true",
    }.items():
        monkeypatch.setenv(f"SHOTLINE_{key}", value)
    monkeypatch.chdir(env.tmp)
    reset_contexts()
    try:
        result = CliRunner().invoke(cli_app, ["review", "pick", str(ids[3]), "--reviewer", "bob"])
        assert result.exit_code == 0, result.output
        assert f"picked shot {ids[3]} as bob; not picked: {ids[0]}, {ids[1]}, {ids[2]}" in (
            " ".join(result.output.split())
        )
        assert [env.state(i) for i in ids] == ["rejected"] * 3 + ["published"]
        again = CliRunner().invoke(cli_app, ["review", "pick", str(ids[0]), "--reviewer", "bob"])
        assert again.exit_code == 2
        assert f"shot {ids[3]} of its slot is already published" in again.output
        missing = CliRunner().invoke(cli_app, ["review", "pick", "999999", "--reviewer", "bob"])
        assert missing.exit_code == 2 and "shot 999999: no such shot" in missing.output
    finally:
        reset_contexts()


def test_token_cli_create_list_revoke(env: WebEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from catalog.tokens import authenticate, token_sha256

    monkeypatch.setenv("SHOTLINE_DATABASE_URL", env.settings.database_url)
    monkeypatch.setenv("SHOTLINE_VAR_DIR", str(env.settings.var_dir))
    monkeypatch.chdir(env.tmp)
    reset_contexts()
    try:
        made = CliRunner().invoke(cli_app, ["review", "token", "create", "alice", "--expires", "7"])
        assert made.exit_code == 0, made.output
        token = made.stdout.strip().splitlines()[-1]
        assert token.startswith("shl_") and len(token) > 40
        with env.sessions() as s:
            stored = s.scalars(select(ReviewerToken.token_sha256)).all()
            assert stored == [token_sha256(token)]  # the hash, never the token
            assert authenticate(s, token) is not None
        listed = CliRunner().invoke(cli_app, ["review", "token", "list", "--json"])
        assert '"status": "active"' in listed.stdout and token not in listed.stdout
        gone = CliRunner().invoke(cli_app, ["review", "token", "revoke", "1"])
        assert gone.exit_code == 0, gone.output
        with env.sessions() as s:
            assert authenticate(s, token) is None
        assert (
            '"status": "revoked"'
            in CliRunner().invoke(cli_app, ["review", "token", "list", "--json"]).stdout
        )
        bad = CliRunner().invoke(cli_app, ["review", "token", "revoke", "99"])
        assert bad.exit_code == 2 and "token 99: no such token" in bad.output
        ctl = CliRunner().invoke(cli_app, ["review", "token", "create", "al\x1bice"])
        assert ctl.exit_code == 2 and "control character U+001B" in ctl.output
    finally:
        reset_contexts()
