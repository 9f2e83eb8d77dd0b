"""``shotline review|lineage|reproduce`` through Typer's CliRunner against real databases.

Rows are inserted with the factories and committed; the CLI opens its own connections, the
way a reviewer's terminal does. SQLite (the embedded default) everywhere, Postgres where a
command writes (approve/reject/export).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from catalog import migrate
from catalog.db import make_engine, make_sessionmaker
from catalog.models import Asset, Generation, ReviewEvent, Shot
from pipeline.settings import Settings
from pipeline.storage import LocalBlobStore
from tasks.cli import app
from tasks.cli.catalog import lineage_cmd
from tasks.cli.common import CliState
from tasks.context import reset_contexts
from tests.conftest import ROOT, create_pg_database, drop_pg_database
from tests.factories import (
    make_asset,
    make_brand,
    make_filter_result,
    make_gated_shot,
    make_generation,
    make_import_run,
    make_product,
    make_review_event,
    make_shot,
    make_watermark,
    noise_png,
)


@dataclass
class CliEnv:
    url: str
    sessions: sessionmaker[Session]
    store: LocalBlobStore
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def invoke(self, *args: str) -> Result:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})

    @contextmanager
    def state(self) -> Iterator[CliState]:
        """What a ``shotline`` invocation started now sees (settings read from the env)."""
        state = CliState(Settings())
        try:
            yield state
        finally:
            state.close()

    def insert(self, fn: Callable[[Session], Any]) -> Any:
        with self.sessions() as s, s.begin():
            return fn(s)

    def shot(self, shot_id: int) -> Shot:
        with self.sessions() as s:
            shot = s.get(Shot, shot_id)
            assert shot is not None
            return shot

    def events(self, shot_id: int) -> list[tuple[str, str, str | None]]:
        with self.sessions() as s:
            rows = s.scalars(
                select(ReviewEvent).where(ReviewEvent.shot_id == shot_id).order_by(ReviewEvent.id)
            )
            return [(e.action, e.reviewer, e.note) for e in rows]

    def set_env(self, name: str, value: str | None) -> None:
        if value is None:
            self.monkeypatch.delenv(name, raising=False)
        else:
            self.monkeypatch.setenv(name, value)
        reset_contexts()


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("review_cli") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def review_pg_url() -> Iterator[str]:
    url = create_pg_database("shotline_review")
    yield url
    reset_contexts()
    drop_pg_database(url)


def _env(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliEnv]:
    var = tmp_path / "var"
    values = {
        "DATABASE_URL": url,
        "VAR_DIR": str(var),
        "BLOB_ROOT": str(var / "blobs"),
        "BLOB_BACKEND": "local",
        "BRANDS_DIR": str(ROOT / "samples" / "brands"),
        "MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "DEVICE": "cpu",
        # These tests review under free names (alice, bob...) from the test brands' lists;
        # tests/tasks/test_review_identity_cli.py covers the authenticated-login default.
        "REVIEW_FREE_NAMES": "true",
    }
    for name in list(os.environ):
        if name.startswith("SHOTLINE_"):
            monkeypatch.delenv(name)
    for key, value in values.items():
        monkeypatch.setenv(f"SHOTLINE_{key}", value)
    monkeypatch.chdir(tmp_path)  # no stray .env from the working copy
    reset_contexts()
    engine = make_engine(url)
    try:
        yield CliEnv(
            url, make_sessionmaker(engine), LocalBlobStore(var / "blobs"), tmp_path, monkeypatch
        )
    finally:
        engine.dispose()
        reset_contexts()


@pytest.fixture
def cli(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliEnv]:
    db = tmp_path / "shotline.db"
    shutil.copy(sqlite_template, db)
    yield from _env(f"sqlite:///{db}", tmp_path, monkeypatch)


@pytest.fixture(params=["sqlite", "postgres"])
def any_cli(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CliEnv]:
    if request.param == "sqlite":
        db = tmp_path / "shotline.db"
        shutil.copy(sqlite_template, db)
        url = f"sqlite:///{db}"
    else:
        url = request.getfixturevalue("review_pg_url")
    yield from _env(url, tmp_path, monkeypatch)


def _gated(env: CliEnv, **kw: Any) -> int:
    return env.insert(lambda s: make_gated_shot(s, store=env.store, **kw).id)


# --- list / show / sheet ------------------------------------------------------------------


def test_list_shows_pending_with_scores_and_reasons(cli: CliEnv) -> None:
    kept = _gated(cli, sku="CUSHION-1")
    rejected = _gated(cli, decision="rejected", sku="CUSHION-2")

    res = cli.invoke("review", "list", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["id"] for r in rows] == [kept]  # pending_review by default
    assert rows[0]["sku"] == "CUSHION-1-RED"
    assert {s["name"] for s in rows[0]["key_scores"]} == {"nsfw", "Nike", "product_match"}

    res = cli.invoke("review", "list", "--status", "rejected")
    assert res.exit_code == 0, res.output
    assert str(rejected) in res.stdout and "CUSHION-2-RED" in res.stdout
    assert "competitor:Nike" in res.stdout  # the reason
    assert "Nike 0.410/0.300" in res.stdout  # the triggered score against its threshold

    res = cli.invoke("review", "list", "--status", "bogus")
    assert res.exit_code == 2
    assert "--status 'bogus'" in res.output


def test_show_prints_record_and_lineage(cli: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    shot_id = _gated(cli, sku="LAMP-9", decision="rejected")
    res = cli.invoke("review", "show", str(shot_id))
    assert res.exit_code == 0, res.output
    for text in ("LAMP-9-RED", "studio product photo", "competitor:Nike", "threshold", "line 2"):
        assert text in res.stdout, text

    res = cli.invoke("review", "show", str(shot_id), "--json")
    data = json.loads(res.stdout)
    assert data["id"] == shot_id and data["lineage"]["csv"]["line"] == 2

    opened: list[str] = []
    monkeypatch.setattr("typer.launch", lambda path, **_: opened.append(path) or 0)
    res = cli.invoke("review", "show", str(shot_id), "--open")
    assert res.exit_code == 0, res.output
    assert len(opened) == 1 and Image.open(opened[0]).size == (64, 64)

    res = cli.invoke("review", "show", "424242")
    assert res.exit_code == 2
    assert "shot 424242: no such shot" in res.output
    assert "Traceback" not in res.output


def test_sheet_writes_html_and_png(cli: CliEnv) -> None:
    brand = cli.insert(lambda s: make_brand(s))
    ids = [_gated(cli, brand=brand, sku=f"S{i}") for i in range(3)]
    out = cli.tmp / "sheet"
    res = cli.invoke("review", "sheet", "--out", str(out), "--brand", brand.name)
    assert res.exit_code == 0, res.output
    html = (out / "contact-sheet.html").read_text()
    assert html.count('<img class="thumb" src="data:image/png;base64,') == 3
    for i in ids:
        assert f'<div class="id">{i}</div>' in html
    grid = Image.open(out / "contact-sheet.png")
    assert grid.size[0] >= 2 * 256 and grid.size[1] >= 2 * 256  # 3 images: 2 x 2 grid
    assert str(out / "contact-sheet.html") in res.stdout
    # Factory shots use the tiny preset: the sheet must say they are noise, not photos.
    assert 'id="banner"' in html and "not product photos" in html
    top_strip = grid.crop((0, 0, grid.width, 20)).convert("RGB")
    assert (255, 243, 205) in {px for _, px in top_strip.getcolors(1 << 16) or []}


def test_sheet_has_no_tiny_banner_for_real_models(cli: CliEnv) -> None:
    brand = cli.insert(lambda s: make_brand(s))
    shot_id = _gated(cli, brand=brand, sku="REAL")

    def use_real_model(s: Any) -> None:
        s.get(Shot, shot_id).model_id = "stabilityai/stable-diffusion-xl-base-1.0"

    cli.insert(use_real_model)
    out = cli.tmp / "sheet-real"
    res = cli.invoke("review", "sheet", "--out", str(out), "--brand", brand.name)
    assert res.exit_code == 0, res.output
    assert 'id="banner"' not in (out / "contact-sheet.html").read_text()


# --- approve / reject ---------------------------------------------------------------------


def test_approve_records_event_and_publishes(any_cli: CliEnv) -> None:
    shot_id = _gated(any_cli)
    res = any_cli.invoke("review", "approve", str(shot_id), "--reviewer", "alice")
    assert res.exit_code == 0, res.output
    assert "approved 1 shot(s) as alice" in res.stdout
    assert "published 1 of 1" in res.stdout
    assert any_cli.events(shot_id) == [("approve", "alice", None)]
    assert any_cli.shot(shot_id).state == "published"
    with any_cli.sessions() as s:
        asset = s.scalar(select(Asset).where(Asset.shot_id == shot_id))
        assert asset is not None
        final = s.get(Shot, shot_id).watermark
        assert final is not None
    # the published object is the gated final file, byte for byte
    assert any_cli.store.get(asset.key) == any_cli.store.get(final.image_key)
    assert asset.sha256 == final.image_sha256


def test_reviewer_from_environment(cli: CliEnv) -> None:
    shot_id = _gated(cli)
    cli.set_env("SHOTLINE_REVIEWER", "env-reviewer")
    res = cli.invoke("review", "reject", str(shot_id), "--reason", "blurry")
    assert res.exit_code == 0, res.output
    assert cli.events(shot_id) == [("reject", "env-reviewer", "blurry")]
    assert cli.shot(shot_id).state == "rejected"


def test_no_reviewer_means_the_authenticated_login(cli: CliEnv) -> None:
    # No --reviewer and no SHOTLINE_REVIEWER: the review is the connection's login, never
    # anonymous; it isn't on the test brand's list, so it is refused and nothing is written.
    shot_id = _gated(cli)
    cli.set_env("SHOTLINE_REVIEWER", None)
    for args in (["approve", str(shot_id)], ["reject", str(shot_id), "--reason", "x"]):
        res = cli.invoke("review", *args)
        assert res.exit_code == 2, res.output
        assert "may not review brand" in res.output and "Traceback" not in res.output
    assert cli.events(shot_id) == []
    assert cli.shot(shot_id).state == "pending_review"


def test_gate_rejected_needs_override_and_reason(any_cli: CliEnv) -> None:
    shot_id = _gated(any_cli, decision="rejected", final=noise_png(5))
    res = any_cli.invoke("review", "approve", str(shot_id), "--reviewer", "alice")
    assert res.exit_code == 2
    assert f"shot {shot_id}: the gate rejected it (competitor:Nike)" in res.output
    assert "--override --reason TEXT" in res.output

    res = any_cli.invoke("review", "approve", str(shot_id), "--reviewer", "alice", "--override")
    assert res.exit_code == 2
    assert "needs --reason" in res.output
    assert any_cli.events(shot_id) == []

    res = any_cli.invoke(
        "review", "approve", str(shot_id), "--reviewer", "alice", "--override",
        "--reason", "logo is our own",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert any_cli.events(shot_id) == [("override", "alice", "logo is our own")]
    assert any_cli.shot(shot_id).state == "published"


def test_unknown_id_is_refused(any_cli: CliEnv) -> None:
    shot_id = _gated(any_cli)
    res = any_cli.invoke("review", "approve", str(shot_id), "99999999", "--reviewer", "alice")
    assert res.exit_code == 2
    assert "shot 99999999: no such shot" in res.output
    assert "Traceback" not in res.output
    assert any_cli.events(shot_id) == []  # nothing of the batch was written
    res = any_cli.invoke("review", "reject", "99999999", "--reviewer", "a", "--reason", "x")
    assert res.exit_code == 2 and "shot 99999999: no such shot" in res.output


def test_reject_needs_reason(cli: CliEnv) -> None:
    shot_id = _gated(cli)
    res = cli.invoke("review", "reject", str(shot_id), "--reviewer", "bob")
    assert res.exit_code == 2 and "rejecting needs --reason TEXT" in res.output
    assert cli.events(shot_id) == []


def test_approve_all_pending_with_filters(cli: CliEnv) -> None:
    brand = cli.insert(lambda s: make_brand(s))
    mine = [_gated(cli, brand=brand), _gated(cli, brand=brand)]
    skipped = _gated(cli, brand=brand, template="lifestyle")
    other = _gated(cli)
    res = cli.invoke(
        "review", "approve", "--all-pending", "--brand", brand.name, "--template", "hero_white",
        "--reviewer", "alice",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [cli.shot(i).state for i in mine] == ["published", "published"]
    assert cli.shot(skipped).state == cli.shot(other).state == "pending_review"

    res = cli.invoke("review", "approve", "--reviewer", "alice")
    assert res.exit_code == 2 and "give shot IDs or --all-pending" in res.output


# --- export -------------------------------------------------------------------------------


def test_export_escapes_formulas(any_cli: CliEnv) -> None:
    brand = any_cli.insert(lambda s: make_brand(s))
    evil = any_cli.insert(
        lambda s: (
            make_gated_shot(
                s, brand=brand, sku='=HYPERLINK("http://x")', prompt="+cmd", decision="rejected"
            ).id
        )
    )
    fine = _gated(any_cli, brand=brand, sku="SAFE-1")
    res = any_cli.invoke(
        "review", "reject", str(fine), "--reviewer", "@mallory", "--reason", "-2+3"
    )
    assert res.exit_code == 0, res.output
    out = any_cli.tmp / "decisions.csv"
    res = any_cli.invoke("review", "export", "--out", str(out), "--brand", brand.name)
    assert res.exit_code == 0, res.output
    assert "wrote 2 row(s)" in res.stdout
    with out.open(encoding="utf-8-sig", newline="") as fh:
        rows = {r["shot_id"]: r for r in csv.DictReader(fh)}
    assert rows[str(evil)]["sku"] == '\'=HYPERLINK("http://x")-RED'
    assert rows[str(evil)]["prompt"] == "'+cmd"
    assert rows[str(fine)]["reviewer"] == "'@mallory"
    assert rows[str(fine)]["review_note"] == "'-2+3"
    assert rows[str(fine)]["sku"] == "SAFE-1-RED"
    # no cell of the file starts with a formula character
    for row in rows.values():
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value


# --- lineage ------------------------------------------------------------------------------


def test_lineage_forward_and_reverse(cli: CliEnv) -> None:
    lora = {"name": "acme-style", "sha256": "ab" * 32, "weight": 0.8, "uri": "loras/a.safetensors"}

    def seed(s: Session) -> tuple[int, int, str, int]:
        brand = make_brand(s)
        run = make_import_run(s, brand, source_uri="file:///data/acme.csv")
        shot = make_gated_shot(
            s, brand=brand, import_run=run, sku="MUG-1", published=True, store=cli.store,
            reviews=[("approve", "alice", None)], adapters=[lora],
        )  # fmt: skip
        assert shot.asset is not None
        return shot.id, shot.asset.id, shot.asset.key, run.id

    shot_id, asset_id, key, run_id = cli.insert(seed)
    for ref in (f"shot:{shot_id}", f"asset:{asset_id}", key, f"s3://bucket/prefix/{key}", "MUG-1"):
        res = cli.invoke("lineage", ref, "--json")
        assert res.exit_code == 0, (ref, res.output)
        [chain] = json.loads(res.stdout)["chains"]
        assert chain["shot_id"] == shot_id
        assert chain["csv"]["uri"] == "file:///data/acme.csv" and chain["csv"]["line"] == 2
        assert chain["asset"]["key"] == key
        assert chain["loras"] == [{k: lora[k] for k in ("name", "sha256", "weight", "uri")}]

    res = cli.invoke("lineage", f"asset:{asset_id}")
    assert res.exit_code == 0, res.output
    for text in ("file:///data/acme.csv line 2", "acme-style @ 0.8", "approve by alice", key):
        assert text in res.stdout, text

    res = cli.invoke("lineage", "--lora", "acme-style@abababab", "--json")
    assert [r["asset_id"] for r in json.loads(res.stdout)] == [asset_id]
    res = cli.invoke("lineage", "--lora", "acme-style@cdcdcdcd", "--json")
    assert json.loads(res.stdout) == []
    res = cli.invoke("lineage", "--lora", "acme-style")
    assert res.exit_code == 0 and "1 published asset(s)" in res.stdout

    res = cli.invoke("lineage", "--import-run", str(run_id), "--json")
    data = json.loads(res.stdout)
    assert [s["shot_id"] for s in data["shots"]] == [shot_id]
    assert data["states"] == {"published": 1}

    for args, msg in (
        (["shot:999999"], "shot:999999: no such shot"),
        (["123"], "a bare number is a sku"),
        (["no/such/key.png"], "no asset, final image or raw image has this key"),
        (["--import-run", "999999"], "import run 999999: no such run"),
        (["--lora", "x@zz"], "8 to 64 hex digits"),
        ([], "give exactly one of REF"),
    ):
        res = cli.invoke("lineage", *args)
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output


# --- reproduce ----------------------------------------------------------------------------


def test_reproduce_matches_exactly_on_cpu(cli: CliEnv) -> None:
    """Generate with the line's own step (tiny preset, CPU, a batch of 3), then reproduce."""
    from tasks.context import context_for
    from tasks.line.orchestrator import generate_shots

    def seed(s: Session) -> list[int]:
        brand = make_brand(s)
        rev = make_product(s, brand, "VASE")
        return [make_shot(s, rev, template=f"t{i}", seed=100 + i).id for i in range(3)]

    ids = cli.insert(seed)
    result = generate_shots(context_for(Settings()), ids, gate_on="cpu")
    assert sorted(result.to_gate) == ids, result
    target = ids[1]
    with cli.sessions() as s:
        gen = s.scalar(select(Generation).where(Generation.shot_id == target))
        assert gen is not None and gen.device.startswith("cpu")
        recorded_sha = gen.sha256

    out = cli.tmp / "again.png"
    res = cli.invoke("reproduce", str(target), "--json", "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["match"] is True
    assert report["reproduced_sha256"] == recorded_sha
    assert report["difference"] is None
    assert report["batch_size"] == 3
    assert hashlib.sha256(out.read_bytes()).hexdigest() == recorded_sha

    res = cli.invoke("reproduce", str(target))
    assert res.exit_code == 0 and "match: true" in res.stdout


def test_reproduce_reports_a_mismatch(cli: CliEnv) -> None:
    """A recorded image that the parameters cannot produce: match false, pixel difference."""
    shot_id = cli.insert(
        lambda s: make_gated_shot(s, store=cli.store, raw=noise_png(3), steps=2).id
    )
    res = cli.invoke("reproduce", str(shot_id), "--json")
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    assert report["match"] is False
    diff = report["difference"]
    assert diff["same_size"] is True and diff["max_abs"] > 0 and diff["changed_fraction"] > 0.5

    res = cli.invoke("reproduce", str(shot_id))
    assert res.exit_code == 1
    assert "match: false" in res.stdout and "pixel difference: max" in res.stdout

    planned = cli.insert(lambda s: make_shot(s, make_product(s, make_brand(s)), state="planned").id)
    res = cli.invoke("reproduce", str(planned))
    assert res.exit_code == 2 and "no raw image" in res.output
    res = cli.invoke("reproduce", "99999999")
    assert res.exit_code == 2 and "shot 99999999: no such shot" in res.output


# --- verify -> lineage --------------------------------------------------------------------


def _photo(size: int = 256) -> Image.Image:
    """A smooth test card (watermarks need some structure and at least 256x256 pixels)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    rgb = np.stack([200 * x + 30, 180 * y + 40, 120 + 80 * np.sin(6 * x * y)], axis=-1)
    noise = np.random.default_rng(1).normal(0, 4, rgb.shape)
    return Image.fromarray(np.clip(rgb + noise, 0, 255).astype(np.uint8), "RGB")


def _published_by_gate(env: CliEnv) -> tuple[int, Path, str]:
    """A published shot whose final file came from ``ClipGate.finalize`` (real watermark + XMP)."""
    from pipeline.gate.stage import ClipGate
    from pipeline.types import ProvenanceInfo

    def seed(s: Session) -> tuple[int, str, str]:
        brand = make_brand(s)
        run = make_import_run(s, brand, source_uri="file:///catalogs/spring.csv")
        rev = make_product(s, brand, "BOWL", import_run=run, line=7)
        shot = make_shot(s, rev, state="published", model_digest="d" * 64)
        make_generation(s, shot, store=env.store)
        make_filter_result(s, shot)
        return shot.id, brand.name, (shot.variant or {})["sku"]

    shot_id, brand, sku = env.insert(seed)
    gate = ClipGate(filter=cast(Any, None))  # finalize needs no CLIP model
    final = gate.finalize(
        shot_id,
        _photo(),
        ProvenanceInfo(shot_id, "tiny", "d" * 64, [], brand, sku, "hero_white"),
        "png",
    )
    assert final.verified, "the gate could not verify its own watermark"

    def finish(s: Session) -> str:
        shot = s.get(Shot, shot_id)
        assert shot is not None
        make_watermark(
            s, shot, final.data, env.store, payload=final.payload, method=final.method,
            verified=final.verified, bit_accuracy=final.bit_accuracy,
        )  # fmt: skip
        make_review_event(s, shot, "approve", "alice")
        return make_asset(s, shot, env.store).key

    key = env.insert(finish)
    downloaded = env.tmp / "found-on-the-web.png"
    downloaded.write_bytes(env.store.get(key))
    return shot_id, downloaded, key


def test_verify_decodes_to_lineage(cli: CliEnv) -> None:
    from pipeline.gate.stage import verify_image

    shot_id, path, key = _published_by_gate(cli)
    result = verify_image(path.read_bytes())
    assert result.verified and result.shot_id == shot_id

    with cli.state() as state:
        chain = lineage_cmd.verify_lineage(state, result.shot_id)
        assert chain is not None
        assert chain["csv"]["uri"] == "file:///catalogs/spring.csv" and chain["csv"]["line"] == 7
        assert chain["asset"]["key"] == key
        assert chain["watermark"]["verified"] is True
        assert [e["reviewer"] for e in chain["review"]["events"]] == ["alice"]
        assert lineage_cmd.verify_lineage(state, None) is None
        assert lineage_cmd.verify_lineage(state, 99999999) is None


def test_shotline_verify_prints_lineage(cli: CliEnv) -> None:
    """``shotline verify FILE`` (the gate's command) ends with the lineage of a known shot."""
    shot_id, path, key = _published_by_gate(cli)
    res = cli.invoke("verify", str(path))
    assert res.exit_code == 0, res.output
    assert f"shot {shot_id}" in res.stdout
    assert "file:///catalogs/spring.csv line 7" in res.stdout
    assert key in res.stdout

    res = cli.invoke("verify", str(path), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["lineage"]["shot_id"] == shot_id
    assert data["lineage"]["csv"]["line"] == 7


def test_approve_reports_a_failed_publish(cli: CliEnv) -> None:
    """The approval stands; a final file missing from the store fails the publish loudly."""
    shot_id = _gated(cli)
    with cli.sessions() as s:
        wm = s.get(Shot, shot_id).watermark  # type: ignore[union-attr]
        assert wm is not None
        key = wm.image_key
    cli.store.delete(key)
    res = cli.invoke("review", "approve", str(shot_id), "--reviewer", "alice")
    assert res.exit_code == 1, res.output
    assert "approved 1 shot(s) as alice" in res.stdout
    assert "publishing failed" in res.output and key in res.output
    assert "Traceback" not in res.output
    assert cli.shot(shot_id).state in ("approved", "failed")
    assert cli.events(shot_id) == [("approve", "alice", None)]


def test_attach_lineage_for_verify_reports(cli: CliEnv) -> None:
    shot_id = _gated(cli)
    with cli.state() as state:
        known = lineage_cmd.attach_lineage(state, {"shot_id": shot_id, "verified": True})
        assert known["lineage"]["shot_id"] == shot_id and "lineage_note" not in known
        # an unverified decode is never looked up, even if some id came out of it
        unverified = lineage_cmd.attach_lineage(state, {"shot_id": shot_id, "verified": False})
        assert unverified["lineage"] is None
        unknown = lineage_cmd.attach_lineage(state, {"shot_id": 99999999, "verified": True})
        assert unknown["lineage"] is None
        assert unknown["lineage_note"] == "shot 99999999 is not in this catalog"
    # no catalog database here: verify still works, it just says so
    cli.set_env("SHOTLINE_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    with cli.state() as state:
        offline = lineage_cmd.attach_lineage(state, {"shot_id": shot_id, "verified": True})
    assert offline["lineage"] is None
    assert offline["lineage_note"].startswith("lineage unavailable")


def test_open_leaves_no_temp_files_and_prunes_old_copies(
    cli: CliEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, class 16: ``review show --open`` used to leave /tmp/shot-ID-*.png behind on
    every call. The copy now lives under var/review-open/, one file per shot image, pruned."""
    import os
    import tempfile

    from tasks.cli.quality.review_cmd import OPEN_DIR, OPEN_KEEP_SECONDS

    shot_id = _gated(cli, sku="LAMP-7", decision="passed")
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_dir))
    opened: list[str] = []
    monkeypatch.setattr("typer.launch", lambda path, **_: opened.append(path) or 0)
    for _ in range(3):
        res = cli.invoke("review", "show", str(shot_id), "--open")
        assert res.exit_code == 0, res.output
    assert len(set(opened)) == 1, "the same shot opened thrice is one file"
    copy = Path(opened[0])
    assert copy.parent.name == OPEN_DIR and copy.is_file()
    assert list(tmp_dir.iterdir()) == [], "nothing left in the temp folder"

    stale = copy.parent / "shot-999-old.png"
    stale.write_bytes(b"x")
    old = copy.stat().st_mtime - OPEN_KEEP_SECONDS - 10
    os.utime(stale, (old, old))
    res = cli.invoke("review", "show", str(shot_id), "--open")
    assert res.exit_code == 0, res.output
    assert not stale.exists(), "copies older than the keep time are pruned"
    assert copy.is_file()


def test_a_reject_between_approve_and_publish_is_reported_exit_2(
    cli: CliEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, class 3: a reject that lands after this approval but before its publish used
    to print "published 0 of 1" with exit 0 and no reason."""
    import tasks.dispatch as dispatch
    from catalog.review import Reviewer
    from catalog.review import reject as reject_shots

    shot_id = _gated(cli)
    real_enqueue = dispatch.enqueue_publish

    def reject_first(ids: list[int], settings: Any) -> None:
        with cli.sessions.begin() as s:  # the other reviewer's transaction commits first
            reject_shots(s, ids, Reviewer("bob", "bob"), "wrong colour")
        real_enqueue(ids, settings)

    monkeypatch.setattr(dispatch, "enqueue_publish", reject_first)
    res = cli.invoke("review", "approve", str(shot_id), "--reviewer", "alice")
    assert res.exit_code == 2, res.output
    assert "published 0 of 1" in res.stdout
    assert f"error: shot {shot_id}: not published: it is rejected now" in res.output
    assert cli.shot(shot_id).state == "rejected"


# --- catalog scale: paging, set-based decisions, reviewer logins (issues 24, 30) ------------


def test_list_pages_by_keyset_with_a_default_limit(any_cli: CliEnv) -> None:
    from tasks.cli.quality.review_cmd import LIST_LIMIT

    brand = any_cli.insert(lambda s: make_brand(s))
    ids = any_cli.insert(
        lambda s: [make_gated_shot(s, brand=brand).id for _ in range(LIST_LIMIT + 2)]
    )

    def listed(*args: str) -> list[int]:
        res = any_cli.invoke("review", "list", "--json", "--brand", brand.name, *args)
        assert res.exit_code == 0, res.output
        return [r["id"] for r in json.loads(res.stdout)]

    assert listed() == ids[:LIST_LIMIT]  # no flag: one page, not every row
    assert listed("--limit", "3") == ids[:3]
    assert listed("--limit", "3", "--after", str(ids[2])) == ids[3:6]
    assert listed("--all") == ids
    assert listed("--all", "--after", str(ids[-2])) == ids[-1:]
    res = any_cli.invoke("review", "list", "--brand", brand.name, "--limit", "2")
    assert res.exit_code == 0, res.output
    assert f"--after {ids[1]} for the next page" in res.output


def test_list_and_show_print_our_newlines_and_escape_user_text(cli: CliEnv) -> None:
    """Issue 24, item 5: the scores cell and the show panel joined their lines with "\\n",
    which the control-character escaping then printed as a literal \\x0a."""
    shot_id = _gated(cli, decision="rejected", sku="ESC\x1b[31m")
    res = cli.invoke("review", "list", "--status", "rejected")
    assert res.exit_code == 0, res.output
    assert "\\x0a" not in res.stdout
    lines = res.stdout.splitlines()
    # key scores: one per line (triggered Nike first), each on its own row of the cell
    assert any("Nike 0.410/0.300" in ln for ln in lines)
    assert not any("Nike 0.410/0.300" in ln and "nsfw" in ln for ln in lines)
    assert "ESC\\x1b[31m" in res.stdout and "\x1b[31m" not in res.stdout  # user text escaped
    res = cli.invoke("review", "show", str(shot_id))
    assert res.exit_code == 0, res.output
    assert "\\x0a" not in res.stdout
    assert any(
        ln.strip("│ ").startswith("prompt: studio product photo")
        for ln in lines + res.stdout.splitlines()
    )


def test_reject_all_pending_takes_the_filters_approve_has(any_cli: CliEnv) -> None:
    brand = any_cli.insert(lambda s: make_brand(s))
    mine = [_gated(any_cli, brand=brand), _gated(any_cli, brand=brand)]
    skipped = _gated(any_cli, brand=brand, template="lifestyle")
    other = _gated(any_cli)
    res = any_cli.invoke(
        "review", "reject", "--all-pending", "--brand", brand.name, "--template", "hero_white",
        "--reviewer", "bob", "--reason", "off-brand light",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"rejected 2 shot(s) as bob: {mine[0]}, {mine[1]}" in res.stdout
    assert [any_cli.events(i) for i in mine] == [[("reject", "bob", "off-brand light")]] * 2
    assert any_cli.shot(skipped).state == any_cli.shot(other).state == "pending_review"
    res = any_cli.invoke("review", "reject", "--all-pending", "--reviewer", "bob")
    assert res.exit_code == 2 and "rejecting needs --reason TEXT" in res.output
    res = any_cli.invoke("review", "reject", str(other), "--brand", brand.name, "--reason", "x")
    assert res.exit_code == 2 and "only filter --all-pending" in res.output


def _brand_yaml(folder: Path, name: str, reviewers: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nbase_model: tiny\nreviewers: {json.dumps(reviewers)}\n"
        "templates:\n  hero_white:\n    prompt: studio photo of {{ product.title }}\n",
        encoding="utf-8",
    )
    return path


def test_an_edited_reviewers_list_applies_at_once(any_cli: CliEnv) -> None:
    """Issue 24, item 4: the brand row keeps the reviewers of the last `plan`; the YAML is the
    source, so an edit takes effect at the next decision."""
    brands = any_cli.tmp / "brands"
    any_cli.set_env("SHOTLINE_BRANDS_DIR", str(brands))
    brand = any_cli.insert(lambda s: make_brand(s, config={"reviewers": ["alice"]}))
    a, b = _gated(any_cli, brand=brand), _gated(any_cli, brand=brand)
    yaml_path = _brand_yaml(brands, brand.name, ["carol"])  # alice removed, carol added
    res = any_cli.invoke("review", "approve", str(a), "--reviewer", "alice")
    assert res.exit_code == 2 and "its reviewers: carol" in res.output
    res = any_cli.invoke("review", "reject", str(a), "--reviewer", "carol", "--reason", "dim")
    assert res.exit_code == 0, res.output
    yaml_path.write_text("name: [unclosed\n", encoding="utf-8")  # a half-saved edit
    res = any_cli.invoke("review", "reject", str(b), "--reviewer", "carol", "--reason", "dim")
    assert res.exit_code == 2 and "does not load" in res.output
    assert any_cli.events(b) == []
    yaml_path.unlink()  # no file: the config stored at the last plan
    res = any_cli.invoke("review", "reject", str(b), "--reviewer", "alice", "--reason", "dim")
    assert res.exit_code == 0, res.output


def test_lineage_finds_every_sku_of_a_visual_variant(any_cli: CliEnv) -> None:
    """One shot depicts the Red variant in every size; any of their skus traces to it."""
    variant = {"sku": "TEE-RED-S", "skus": ["TEE-RED-S", "TEE-RED-M"], "options": {"Color": "Red"}}
    shot_id = any_cli.insert(lambda s: make_gated_shot(s, sku="TEE", variant=variant).id)
    for ref in ("TEE-RED-S", "TEE-RED-M", "sku:TEE-RED-M", "TEE"):
        res = any_cli.invoke("lineage", ref, "--json")
        assert res.exit_code == 0, (ref, res.output)
        assert [c["shot_id"] for c in json.loads(res.stdout)["chains"]] == [shot_id]
    res = any_cli.invoke("lineage", "TEE-RED")  # a prefix names nothing
    assert res.exit_code == 2 and "no shots for this sku" in res.output


def test_every_reviewer_command_as_a_reviewer_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24, item 1: a login in shotline_reviewer could approve but not look (permission
    denied for table shot_embeddings). Every reviewer command, as such a login, on Postgres."""
    import uuid

    import psycopg
    from sqlalchemy import make_url

    from catalog.embeddings import store_embedding
    from tests.conftest import PG_ADMIN_DSN

    url = create_pg_database("shotline_revlogin")
    login = f"shotline_t_rev_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE shotline_reviewer')
    as_reviewer = make_url(url).set(username=login).render_as_string(False)
    admin = make_engine(url)
    try:
        gen = _env(as_reviewer, tmp_path, monkeypatch)
        env = next(gen)
        env.set_env("SHOTLINE_REVIEW_FREE_NAMES", None)  # the login is the reviewer
        store = env.store

        def seed(s: Session) -> list[int]:
            brand = make_brand(s, config={"reviewers": [login]})
            shots = [make_gated_shot(s, brand=brand, store=store) for _ in range(3)]
            for shot in shots:
                store_embedding(s, shot.id, "tiny", np.ones(8, dtype=np.float32))
            return [shot.id for shot in shots]

        with make_sessionmaker(admin).begin() as s:
            a, b, c = seed(s)
        for args in (
            ["list", "--json"],
            ["list"],
            ["show", str(a)],
            ["show", str(a), "--json"],
            ["sheet", "--out", str(tmp_path / "sheet")],
            ["approve", str(a)],
            ["reject", str(b), "--reason", "dim"],
            ["approve", "--all-pending"],
            ["export", "--out", str(tmp_path / "decisions.csv")],
        ):
            res = env.invoke("review", *args)
            assert res.exit_code == 0, (args, res.output)
            assert "permission denied" not in res.output
        with make_sessionmaker(admin)() as s:
            assert s.get(Shot, a).state == s.get(Shot, c).state == "published"
            assert s.get(Shot, b).state == "rejected"
            assert {e.authenticated_reviewer for e in s.scalars(select(ReviewEvent))} == {login}
        gen.close()
    finally:
        admin.dispose()
        reset_contexts()
        drop_pg_database(url)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{login}"')
