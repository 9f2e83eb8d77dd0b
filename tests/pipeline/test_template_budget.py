"""Templates cannot cost unbounded time or memory: loops, arithmetic, growth, size filters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.brand.config import BrandConfig, BrandConfigError
from pipeline.brand.loader import load_brand, parse_brand
from pipeline.brand.templates import (
    PromptRenderer,
    RenderError,
    WordTokenCounter,
    build_context,
    make_environment,
)

ROOT = Path(__file__).resolve().parents[2]
DOUBLING = "{% set s = 'ab' * 1000 %}" + "{% set s = s ~ s %}" * 12 + "{{ s }}"
PLUS_DOUBLING = "{% set s = 'ab' * 1000 %}" + "{% set s = s + s %}" * 12 + "{{ s }}"
LIST_DOUBLING = "{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 20 + "{{ a }}"

HOSTILE = [
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% for a in range(9000) %}{% for b in range(9000) %}{% endfor %}{% endfor %}",
    "{% for a in product.body_html * 10 %}{% for b in product.body_html * 10 %}"
    "{% endfor %}{% endfor %}",
    "{{ ((9**64)**64)**64 }}",
    "{{ (2**4000) * (2**4000) }}",
    "{{ ('a\\n' * 100000) | indent(100000) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ 'x'.center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ ('\\t' * 1000).expandtabs(10**6) }}",
    DOUBLING,
    PLUS_DOUBLING,
    LIST_DOUBLING,
    "{{ '%0999999999d' % 1 }}",
    "{{ '%s' | format('x' * 100000) * 3 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ ('x' * 100000) | replace('', 'yyyyy') }}",
    "{{ ('x' * 100000).replace('x', 'yyyyy') }}",
    "{{ range(10000) | join('x' * 1000) }}",
    "{{ ('x' * 1000).join(range(10000) | map('string')) }}",
    "{{ ('x' * 100000) | wordwrap(1, wrapstring='y' * 100) }}",
    "{{ [1] | batch(10**9, 'x') | list }}",
    "{{ [1] | slice(10**9, 'x') | list }}",
    "{{ range(1000) | batch(1) | sum(start=[]) }}",
    "{{ (1).to_bytes(10**9, 'big') }}",
    "{{ [['x' * 1000] * 150] | tojson(indent=100000) }}",
    "{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}",
    "{% for i in range(5000) %}{% set y = 'x' | center(100000) %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_templates_are_refused_quickly(source: str) -> None:
    raw = {"name": "acme", "templates": {"hero": {"prompt": source}}}
    start = time.monotonic()
    with pytest.raises(BrandConfigError) as info:
        parse_brand(raw)
    assert time.monotonic() - start < 10
    [problem] = info.value.problems
    assert problem.startswith("templates.hero.prompt: refused by the sandbox on template line 1: ")


def test_refusal_names_the_template_line() -> None:
    source = "photo of {{ product.title }}\n\n{{ 'x' | center(10**9) }}\n"
    with pytest.raises(BrandConfigError) as info:
        parse_brand({"name": "acme", "templates": {"hero": {"prompt": source}}})
    assert "on template line 3: center()" in info.value.problems[0]
    brand = BrandConfig.model_validate(
        {"name": "acme", "templates": {"t": {"prompt": "a\n{{ product.title * 1000 }}"}}}
    )
    renderer = PromptRenderer(brand, token_counter=WordTokenCounter())
    product = {"key": "k", "title": "x" * 1000, "options": []}
    with pytest.raises(RenderError, match=r"^t\.prompt on template line 2: refused by the sandbox"):
        renderer.render("t", product)


def _plain_env(real: Any) -> ImmutableSandboxedEnvironment:
    """Jinja's stock sandbox with our filters unwrapped: what templates rendered before."""
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters.update({k: getattr(f, "__wrapped__", f) for k, f in real.filters.items()})
    return env


NORMAL = [
    "photo of {{ product.title }}, {{ variant.color | lower }}, {{ product.tags | join(', ') }}",
    "{% for t in product.tags %}{{ loop.index }}:{{ t | upper }} {% endfor %}{{ 2 ** 10 }}",
    "{{ product.body_html | strip_html | truncate(20) }} {{ '%s-%d' % ('a', 3) }}",
    "{{ [1, 2, 3] | sum }} {{ {'a': 1} | tojson }} {{ product.title | center(30) }}|",
    "{% set s = product.title ~ ' ' ~ product.vendor %}{{ s * 2 }} {{ s | wordwrap(8) }}",
    "{{ '{:>6}'.format(product.key) }} {{ range(3) | list }} {{ (1, 2) }} {{ 7 // 2 }}",
    "{{ product.tags | join_tags(' / ', 1) }} {{ product.title | replace('Mug', 'Cup') }}",
]


@pytest.mark.parametrize("source", NORMAL)
def test_normal_templates_render_as_in_the_stock_sandbox(source: str) -> None:
    env = make_environment(WordTokenCounter())
    brand = BrandConfig.model_validate({"name": "acme", "templates": {}})
    product = {
        "key": "mug-1",
        "title": "Enamel Mug",
        "body_html": "<p>A sturdy <b>enamel</b> mug for camping trips.</p>",
        "vendor": "ACME",
        "tags": ["kitchen", "camp", "Kitchen"],
        "options": ["Color"],
    }
    ctx = build_context(product, {"Color": "Red"}, brand)
    expected = _plain_env(env).from_string(source).render(ctx)
    assert env.from_string(source).render(ctx) == expected


def test_sample_brand_renders_as_in_the_stock_sandbox() -> None:
    brand = load_brand(ROOT / "samples/brands/acme.yaml")
    renderer = PromptRenderer(brand, token_counter=WordTokenCounter())
    plain = _plain_env(renderer.env)
    product = {"key": "mug", "title": "Enamel Mug", "tags": ["kitchen"], "options": ["Color"]}
    variant = {opt: "red" for opt in brand.visual_options}
    for name, spec in brand.templates.items():
        ctx = build_context(product, variant, brand, brand.adapters_for(name))
        for fname in ("prompt", "negative_prompt"):
            source = getattr(spec, fname)
            ours = renderer.env.from_string(source).render(ctx)
            assert ours == plain.from_string(source).render(ctx)
