"""The child side of tests/test_property_inputs.py: Hypothesis strategies and one check each.

Run inside a process capped with ``resource.setrlimit``; every check raises on a traceback, an
exit code other than 0 or 2, or an example slower than ``EXAMPLE_BUDGET_S``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_BUDGET_S = 20.0

SHOPIFY_HEADER = [
    "Handle",
    "Title",
    "Body (HTML)",
    "Vendor",
    "Type",
    "Tags",
    "Variant SKU",
    "Option1 Name",
    "Option1 Value",
    "Variant Price",
    "Image Src",
]
# Text that breaks naive code: markup, terminal escapes, NULs, bidi, zero-width, quotes.
NASTY = [
    "[bold red]x[/]",
    "[/]",
    ":abc:",
    "\x1b[2J",
    "\x1b]8;;http://x\x07",
    "\x00",
    "\u202e",
    "\u200b",
    '"',
    '""',
    ",",
    ";",
    "\t",
    "\r\n",
    "\n",
    "=cmd|",
    "{{ 7*7 }}",
    "{% for %}",
    "Café Crème",
    "\xe9",
    "𝔘𝔫𝔦",
    "a" * 5000,
    "CON",
    "../../etc/passwd",
]
cells = st.one_of(st.text(max_size=40), st.sampled_from(NASTY))
JINJA = [
    "{{",
    "}}",
    "{%",
    "%}",
    " for x in range(",
    ")",
    " endfor ",
    "**",
    "*",
    "~",
    "+",
    "9",
    "99999",
    "10**9",
    "product.title",
    "product",
    " | ",
    "indent(",
    "center(",
    "lower",
    "join",
    "replace(",
    "truncate(",
    "wordwrap(",
    "format(",
    "'s'",
    "x",
    ",",
    " if ",
    " else ",
    " endif ",
    "(",
    "[",
    "]",
    ".",
    "__class__",
    "lora",
    "variant",
    "brand.name",
    "strip_html",
    "truncate_tokens(",
    "join_tags",
    " ",
    "a" * 50,
]


def _cli(args: list[str], env: dict[str, str]) -> None:
    from typer.testing import CliRunner

    from tasks.cli import app

    started = time.monotonic()
    result = CliRunner(env=env).invoke(app, args, catch_exceptions=True)
    elapsed = time.monotonic() - started
    out = result.output
    assert "Traceback" not in out, out[-3000:]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {type(result.exception).__name__}: {result.exception}")
    assert result.exit_code in (0, 2), f"{args}: exit {result.exit_code}: {out[-2000:]}"
    assert elapsed < EXAMPLE_BUDGET_S, f"{args}: took {elapsed:.1f} s"


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    header = draw(st.one_of(st.just(SHOPIFY_HEADER), st.lists(cells, min_size=1, max_size=8)))
    rows = draw(st.lists(st.lists(cells, max_size=len(header) + 2), max_size=12))
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    text = "\n".join(sep.join(r) for r in [header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "cp1252", "utf-16", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    junk = draw(st.binary(max_size=64))
    return draw(st.sampled_from([data, data + junk, junk + data, junk]))


def csv_case(tmp: Path, env: dict[str, str]) -> Callable[..., None]:
    @given(data=csv_bytes(), fmt=st.sampled_from(["auto", "shopify", "gmc", "generic"]))
    def check(data: bytes, fmt: str) -> None:
        path = tmp / "catalog.csv"
        path.write_bytes(data)
        _cli(["import", str(path), "--brand", "acme", "--format", fmt], env)

    return check


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), cells),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(cells, inner, max_size=4)),
    max_leaves=12,
)
BRAND_KEYS = [
    "name",
    "display_name",
    "base_model",
    "loras",
    "presets",
    "templates",
    "visual_options",
    "competitors",
    "blocked_terms",
    "safety",
    "reviewers",
    "negative",
]


@st.composite
def brand_yaml(draw: st.DrawFn) -> str:
    doc: dict[str, Any] = {"name": "demo", "templates": {"hero": {"prompt": "photo"}}}
    for key in draw(st.lists(st.sampled_from(BRAND_KEYS), max_size=5)):
        doc[key] = draw(json_values)
    if draw(st.booleans()):
        doc["templates"] = {"hero": {"preset": "tiny_fast", "prompt": draw(template_text())}}
    raw = yaml.safe_dump(doc, allow_unicode=True)
    return draw(st.sampled_from([raw, raw + draw(st.text(max_size=40)), draw(st.text())]))


def brand_case(tmp: Path, env: dict[str, str]) -> Callable[..., None]:
    @given(text=brand_yaml())
    def check(text: str) -> None:
        path = tmp / "demo.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _cli(["brands", "check", str(path), "--no-hash"], env)

    return check


def template_text() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(JINJA), max_size=30).map("".join)


def template_case(tmp: Path, env: dict[str, str]) -> Callable[..., None]:
    from pipeline.brand.config import BrandConfigError
    from pipeline.brand.loader import parse_brand
    from pipeline.brand.templates import PromptRenderer, RenderError, WordTokenCounter

    @given(source=template_text(), title=cells, body=cells)
    def check(source: str, title: str, body: str) -> None:
        started = time.monotonic()
        doc = {"name": "demo", "templates": {"hero": {"preset": "tiny_fast", "prompt": source}}}
        try:
            cfg = parse_brand(doc)
        except BrandConfigError:
            return  # refused at `brands check`: fine, that is a clean refusal
        product = {
            "title": title,
            "body_html": body,
            "vendor": "v",
            "product_type": "t",
            "tags": [title],
            "options": {},
            "key": "k",
        }
        with contextlib.suppress(RenderError):
            # Word counts, not the CLIP tokenizer: it would import torch into the capped process.
            PromptRenderer(cfg, token_counter=WordTokenCounter()).render("hero", product)
        assert time.monotonic() - started < EXAMPLE_BUDGET_S, source

    return check


def run(kind: str, examples: int, tmp_dir: str) -> None:
    from catalog import migrate

    tmp = Path(tmp_dir)
    env = {
        "SHOTLINE_VAR_DIR": str(tmp / "var"),
        "SHOTLINE_DATABASE_URL": f"sqlite:///{tmp / 'var' / 'shotline.db'}",
        "SHOTLINE_BRANDS_DIR": str(ROOT / "samples" / "brands"),
    }
    os.environ.update(env)
    (tmp / "var").mkdir(parents=True, exist_ok=True)
    migrate.upgrade(env["SHOTLINE_DATABASE_URL"])
    case = {"csv": csv_case, "brand_yaml": brand_case, "template": template_case}[kind]
    check = case(tmp, env)
    settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        # No explain phase: its tracer holds every branch taken, too much under the cap.
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )(check)()
    print(f"{kind}: {examples} examples ok")
