"""Alt text: a brand's sandboxed Jinja template over the same product fields as prompts.

The template is configuration (``channels.<name>.alt_text``); catalog text is only ever data
in its render context, so a title of ``{{ 7*7 }}`` comes out as those characters. It runs in
the prompt sandbox (``pipeline.brand.sandbox``: bounded time, loops and sizes) with Jinja's
own filters (``striptags``, ``truncate``, ``join``...). Rendered text is one line, at most
``MAX_ALT_CHARS`` characters (cut at a word boundary).

This module imports nothing from ``pipeline.brand.config`` (which validates alt text with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError, meta
from jinja2.exceptions import SecurityError, TemplateSyntaxError

from pipeline.brand.sandbox import PromptSandbox

MAX_ALT_CHARS = 512
ALT_VARIABLES = frozenset({"brand", "product", "variant"})


class AltTextError(ValueError):
    """An alt text template that does not compile or fails on one product."""


class _AnyOption(dict[str, str]):
    """A sample variant that has every option (a brand check cannot know the catalog's)."""

    def __missing__(self, key: Any) -> str:
        return f"sample {str(key).lower()}"


def _environment() -> PromptSandbox:
    env = PromptSandbox(undefined=StrictUndefined, autoescape=False)
    for name in ("lipsum", "cycler", "joiner", "namespace", "dict"):
        env.globals.pop(name, None)
    env.bound_filters()
    return env


_ENV = _environment()


def sample_alt_context() -> dict[str, Any]:
    return {
        "product": {
            "key": "sample-product",
            "title": "Sample Product",
            "body_html": "<p>A sample product.</p>",
            "vendor": "Sample Vendor",
            "product_type": "Sample Type",
            "tags": ["sample", "tag"],
            "options": ["Color", "Size"],
        },
        "variant": _AnyOption({"Color": "sample color"}),
        "brand": {"name": "sample", "display_name": "Sample Brand"},
    }


def compile_alt_text(source: str) -> Template:
    """The compiled template; ``AltTextError`` with one line when it is not usable."""
    try:
        ast = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise AltTextError(f"syntax error on template line {exc.lineno}: {exc.message}") from None
    unknown = meta.find_undeclared_variables(ast) - ALT_VARIABLES - set(_ENV.globals)
    if unknown:
        names = ", ".join(repr(v) for v in sorted(unknown))
        raise AltTextError(f"unknown template variable {names} (known: brand, product, variant)")
    try:
        return _ENV.from_string(source)
    except (TemplateError, SecurityError) as exc:
        raise AltTextError(f"does not compile: {exc}") from None


def render_alt_text(template: Template, context: Mapping[str, Any]) -> str:
    """One line of at most ``MAX_ALT_CHARS`` characters; ``AltTextError`` when it fails."""
    try:
        out = template.render(context)
    except UndefinedError as exc:
        raise AltTextError(f"unknown variable or attribute: {exc.message}") from None
    except SecurityError as exc:
        raise AltTextError(f"refused by the sandbox: {exc}") from None
    except Exception as exc:  # a filter failing on this product's data
        raise AltTextError(f"{type(exc).__name__}: {exc}") from None
    text = " ".join(out.split())
    if len(text) > MAX_ALT_CHARS:
        cut = text[: MAX_ALT_CHARS + 1].rsplit(" ", 1)[0]
        text = (cut if cut and len(cut) <= MAX_ALT_CHARS else text[:MAX_ALT_CHARS]).rstrip()
    return text


def alt_text_problem(source: str) -> str | None:
    """Why ``source`` is not a usable alt text template (it must render a sample product)."""
    try:
        render_alt_text(compile_alt_text(source), sample_alt_context())
    except AltTextError as exc:
        return str(exc)
    return None
