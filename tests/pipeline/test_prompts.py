"""Prompt templating: catalog text is data, templates run sandboxed, tokens are counted."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipeline.brand.config import BrandConfig, BrandConfigError
from pipeline.brand.loader import parse_brand
from pipeline.brand.templates import (
    CLIP_MAX_TOKENS,
    ClipTokenCounter,
    PromptRenderer,
    RenderError,
    join_tags,
    strip_html,
    truncate_to_tokens,
)

SSTI_PAYLOADS = [
    "{{ 7*7 }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__['os'].system('id') }}",
    "{% raw %}{{ x }}{% endraw %}",
]


@pytest.fixture(scope="module")
def counter() -> ClipTokenCounter:
    c = ClipTokenCounter()
    c.count("warm up")  # loads the BPE once, outside the timed tests
    return c


def _brand(templates: dict[str, Any], **extra: Any) -> BrandConfig:
    return BrandConfig.model_validate({"name": "acme", "templates": templates, **extra})


def _product(**kw: Any) -> dict[str, Any]:
    return {
        "key": "mug",
        "title": "Enamel Mug",
        "body_html": "<p>Sturdy</p>",
        "vendor": "ACME",
        "product_type": "Mug",
        "tags": ["kitchen"],
        "options": ["Color"],
        **kw,
    }


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
@pytest.mark.parametrize("field", ["title", "body_html", "vendor"])
def test_catalog_payloads_render_literally_and_cost_nothing(
    payload: str, field: str, counter: ClipTokenCounter
) -> None:
    brand = _brand(
        {"t": {"prompt": "{{ product.title }} | {{ product.body_html }} | {{ product.vendor }}"}}
    )
    renderer = PromptRenderer(brand, token_counter=counter)
    start = time.perf_counter()
    out = renderer.render("t", _product(**{field: payload}))
    assert time.perf_counter() - start < 0.5
    assert payload in out.prompt  # literally, not evaluated
    assert "49" not in out.prompt


def test_payload_in_variant_and_tags_is_literal(counter: ClipTokenCounter) -> None:
    brand = _brand({"t": {"prompt": "{{ variant.Color }} {{ product.tags | join_tags }}"}})
    out = PromptRenderer(brand, token_counter=counter).render(
        "t", _product(tags=["{{ 7*7 }}"]), {"Color": "{% for x in range(10**9) %}"}
    )
    assert out.prompt == "{% for x in range(10**9) %} {{ 7*7 }}"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ product.title.__class__.__mro__ }}",
        "{{ product['__class__'] }}",
        "{{ product.title | attr('__class__') }}",
        "{{ product.tags.append('x') }}",
        "{% for x in range(10**9) %}x{% endfor %}",
        "{{ 'a' * 1000000000 }}",
        "{{ 2 ** 100000000 }}",
    ],
)
def test_unsafe_templates_are_refused_as_config_errors(source: str) -> None:
    raw = {"name": "acme", "templates": {"hero": {"prompt": source}}}
    with pytest.raises(BrandConfigError) as info:
        parse_brand(raw)
    [problem] = info.value.problems
    assert problem.startswith("templates.hero.prompt: ")
    assert "sandbox" in problem or "fails to render" in problem or "too" in problem


def test_renderer_refuses_private_attribute_templates_even_unchecked() -> None:
    # model_validate skips the whole-file checks; the renderer still refuses to compile.
    brand = _brand({"hero": {"prompt": "{{ ''.__class__ }}"}})
    with pytest.raises(BrandConfigError, match=r"templates\.hero\.prompt.*refused"):
        PromptRenderer(brand)
    brand = _brand({"hero": {"prompt": "{{ product.title | attr('__class__') }}"}})
    with pytest.raises(RenderError, match="sandbox"):
        PromptRenderer(brand).render("hero", _product())


def test_unneeded_globals_are_gone() -> None:
    with pytest.raises(BrandConfigError, match="unknown template variable 'lipsum'"):
        parse_brand({"name": "acme", "templates": {"t": {"prompt": "{{ lipsum() }}"}}})


def test_strip_html_keeps_visible_text_only() -> None:
    html = (
        "<p>Soft&nbsp;<b>cotton</b> &amp; linen</p><ul><li>one</li><li>two</li></ul>"
        "<script>alert('x')</script><style>p{}</style>"
    )
    assert strip_html(html) == "Soft cotton & linen one two"
    assert strip_html(None) == ""


def test_join_tags_dedupes_ignoring_case_and_limits() -> None:
    assert join_tags(["Kitchen", " kitchen ", "gift", "", "enamel"]) == "Kitchen, gift, enamel"
    assert join_tags("a, b ,A", sep=" ") == "a b"
    assert join_tags(["a", "b", "c"], limit=2) == "a, b"


def test_token_counts_match_clip(counter: ClipTokenCounter) -> None:
    assert counter.count("a photo of a cat") == 5
    text, total = truncate_to_tokens(counter, "one two three four five", 3)
    assert (text, total) == ("one two three", 5)


def test_truncate_tokens_filter_cuts_and_warns(counter: ClipTokenCounter) -> None:
    brand = _brand({"t": {"prompt": "{{ product.body_html | strip_html | truncate_tokens(4) }}"}})
    out = PromptRenderer(brand, token_counter=counter).render(
        "t", _product(body_html="<p>alpha beta gamma delta epsilon zeta</p>")
    )
    assert out.prompt == "alpha beta gamma delta"
    assert out.warnings == ["truncate_tokens cut a text from 6 to 4 tokens"]


def test_long_prompt_is_reported_not_cut(counter: ClipTokenCounter) -> None:
    brand = _brand({"t": {"prompt": "photo of {{ product.title }}"}})
    title = " ".join(f"word{i}" for i in range(100))
    out = PromptRenderer(brand, token_counter=counter).render("t", _product(title=title))
    assert title in out.prompt  # nothing silently cut
    assert out.token_count > CLIP_MAX_TOKENS
    assert any(f"prompt is {out.token_count} tokens" in w for w in out.warnings)


def test_trigger_words_are_prepended_unless_the_template_places_them(
    counter: ClipTokenCounter,
) -> None:
    lora = {"name": "style", "path": "style.safetensors", "sha256": "a" * 64}
    brand = _brand(
        {
            "auto": {"prompt": "photo of {{ product.title }}"},
            "placed": {"prompt": "{{ product.title }}, {{ lora.style }} look"},
        },
        loras=[{**lora, "trigger_word": "acmestyle"}],
    )
    r = PromptRenderer(brand, token_counter=counter)
    assert r.render("auto", _product()).prompt == "acmestyle, photo of Enamel Mug"
    assert r.render("placed", _product()).prompt == "Enamel Mug, acmestyle look"


def test_variant_lookup_ignores_case_and_competitors_are_removed(
    counter: ClipTokenCounter,
) -> None:
    brand = _brand(
        {"t": {"prompt": "{{ product.title }} in {{ variant.Color }}"}},
        competitors=[{"name": "Nike"}],
    )
    out = PromptRenderer(brand, token_counter=counter).render(
        "t", _product(title="Runner compatible with Nike shoes"), {"colour": "x", "color": "Red"}
    )
    assert out.prompt == "Runner compatible with shoes in Red"
    assert out.removals[0]["term"] == "Nike"


def test_missing_variant_option_is_a_render_error(counter: ClipTokenCounter) -> None:
    brand = _brand({"t": {"prompt": "{{ product.title }} in {{ variant.Color }}"}})
    with pytest.raises(RenderError, match=r"t\.prompt.*Color"):
        PromptRenderer(brand, token_counter=counter).render("t", _product(), {})
