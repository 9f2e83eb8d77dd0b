"""Prompt templating: Jinja2 in an immutable sandbox, with StrictUndefined.

Only the brand file's templates are ever compiled. Catalog fields are untrusted data:
they are passed in the render context and come out as plain text, so a product
title of ``{{ 7*7 }}`` or ``{% for x in range(10**9) %}`` appears literally and
costs nothing. Templates themselves run sandboxed too: attribute access such as
``''.__class__`` is refused, containers are immutable, the unneeded globals (lipsum,
cycler...) are gone, and time, loops and the size of every value are bounded
(``pipeline.brand.sandbox``, ``pipeline.brand.budget``).

Context a template sees:
- ``product``: key, title, body_html, vendor, product_type, tags (list), options (names);
- ``variant``: the visual option values of this shot, e.g. ``variant.Color`` (lookups
  ignore case, so ``variant.color`` works for a ``Color`` option);
- ``brand``: name, display_name;
- ``lora``: LoRA name -> trigger word for the LoRAs this template applies. A template
  that never mentions ``lora`` gets the trigger words prepended to its prompt.

Filters: ``strip_html``, ``truncate_tokens(n=75)`` (warns when it cuts) and
``join_tags(sep=", ", limit=None)``. The CLIP text encoder reads 77 tokens (75 plus
start/end); longer prompts are reported as warnings at planning time, not cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Protocol

from jinja2 import StrictUndefined, Template, TemplateError, Undefined, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError

from pipeline.brand.budget import MAX_RENDER_CHARS
from pipeline.brand.config import BrandConfig, BrandConfigError, BrandProblem, Loc
from pipeline.brand.sandbox import PromptSandbox
from pipeline.brand.sanitize import Sanitizer, tidy
from pipeline.types import AdapterRef

if TYPE_CHECKING:
    from pipeline.brand.clip_bpe import ClipBpe

KNOWN_VARIABLES = frozenset({"brand", "lora", "product", "variant"})
CLIP_CONTEXT_LENGTH = 77
CLIP_MAX_TOKENS = CLIP_CONTEXT_LENGTH - 2  # start and end of text take one token each
# Catalog text beyond this is cut (with a warning) before it reaches a template.
MAX_FIELD_CHARS = 20_000


class RenderError(ValueError):
    """A template failed on one product (e.g. a variant lacks an option the template uses)."""


# --- tokens -------------------------------------------------------------------------


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


class ClipTokenCounter:
    """Counts tokens exactly as the CLIP text encoder does.

    The algorithm of open_clip's ``SimpleTokenizer`` over the BPE vocabulary open_clip ships
    (``pipeline.brand.clip_bpe``), so it works offline and imports no torch. The vocabulary is
    read on first use.
    """

    _CACHE_SIZE = 8192

    def __init__(self, tokenizer: ClipBpe | None = None) -> None:
        self._tokenizer = tokenizer
        # Negative prompts and words repeat across a catalog; BPE (with ftfy) is the slow part.
        self._counts: dict[str, int] = {}

    @property
    def tokenizer(self) -> ClipBpe:
        if self._tokenizer is None:
            from pipeline.brand.clip_bpe import ClipBpe

            self._tokenizer = ClipBpe()
        return self._tokenizer

    def count(self, text: str) -> int:
        n = self._counts.get(text)
        if n is None:
            n = len(self.tokenizer.encode(text))
            if len(self._counts) >= self._CACHE_SIZE:
                self._counts.clear()
            self._counts[text] = n
        return n


class WordTokenCounter:
    """A tokenizer-free estimate (words and punctuation), for checks that only need to run."""

    def count(self, text: str) -> int:
        return len(re.findall(r"\w+|[^\w\s]", text))


def truncate_to_tokens(counter: TokenCounter, text: str, max_tokens: int) -> tuple[str, int]:
    """``text`` cut at a word boundary to at most ``max_tokens``; also its original count."""
    total = counter.count(text)
    if total <= max_tokens:
        return text, total
    used, end = 0, 0
    # CLIP splits on whitespace before BPE, so per-word counts add up to the whole.
    for m in re.finditer(r"\S+", text):
        n = counter.count(m.group())
        if used + n > max_tokens:
            break
        used, end = used + n, m.end()
    return text[:end].rstrip(" ,;:-"), total


# --- filters ------------------------------------------------------------------------

# Tags that separate words when rendered: "<li>a</li><li>b</li>" is "a b", not "ab".
_BLOCK_TAGS = frozenset(
    (
        *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt"),
        *("figcaption", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr"),
        *("li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul"),
    )
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _text(value: Any) -> str:
    if value is None or isinstance(value, Undefined):
        return ""
    return str(value)


def strip_html(value: Any) -> str:
    """Visible text of an HTML fragment (Shopify ``Body (HTML)``): tags, scripts, entities gone."""
    parser = _TextExtractor()
    parser.feed(_text(value))
    parser.close()
    return " ".join("".join(parser.parts).split())


def join_tags(value: Any, sep: str = ", ", limit: int | None = None) -> str:
    """Tags (a list, or a comma-separated string) de-duplicated ignoring case, joined."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        tag = " ".join(_text(item).split())
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            out.append(tag)
    if limit is not None:
        out = out[: max(0, int(limit))]
    return sep.join(out)


# --- the sandbox ----------------------------------------------------------------------


def make_environment(
    counter: TokenCounter, warn: Callable[[str], None] = lambda _msg: None
) -> PromptSandbox:
    env = PromptSandbox(undefined=StrictUndefined, autoescape=False)
    for name in ("lipsum", "cycler", "joiner", "namespace", "dict"):
        env.globals.pop(name, None)

    def truncate_tokens(value: Any, n: int = CLIP_MAX_TOKENS) -> str:
        text, total = truncate_to_tokens(counter, _text(value), int(n))
        if total > n:
            warn(f"truncate_tokens cut a text from {total} to {n} tokens")
        return text

    env.filters.update(strip_html=strip_html, join_tags=join_tags, truncate_tokens=truncate_tokens)
    # truncate_tokens may load the CLIP tokenizer on first use: not the template's time.
    env.bound_filters(trusted=("truncate_tokens",))
    return env


def _unsafe_access(ast: nodes.Template) -> str | None:
    """The first private attribute a template reaches for (``x.__class__``, ``x['_y']``)."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            name = node.arg.value
        else:
            continue
        if name.startswith("_"):
            return name
    return None


# --- context ----------------------------------------------------------------------------


class VariantValues(dict[str, str]):
    """Visual option values; ``variant.color`` finds ``Color`` (catalogs disagree on case)."""

    def __missing__(self, key: Any) -> str:
        if isinstance(key, str):
            for k, v in self.items():
                if k.casefold() == key.casefold():
                    return v
        raise KeyError(key)


def _capped(name: str, value: Any, warnings: list[str]) -> str:
    text = _text(value)
    if len(text) > MAX_FIELD_CHARS:
        warnings.append(
            f"product.{name} is {len(text)} characters; used the first {MAX_FIELD_CHARS}"
        )
        text = text[:MAX_FIELD_CHARS]
    return text


def build_context(
    product: Mapping[str, Any],
    variant: Mapping[str, str],
    brand: BrandConfig,
    adapters: Sequence[AdapterRef] = (),
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The render context for one shot. Catalog values become plain strings (data, never code)."""
    warnings = [] if warnings is None else warnings
    tags = product.get("tags") or []
    if isinstance(tags, str):
        tags = tags.split(",")
    return {
        "product": {
            "key": _capped("key", product.get("key"), warnings),
            "title": _capped("title", product.get("title"), warnings),
            "body_html": _capped("body_html", product.get("body_html"), warnings),
            "vendor": _capped("vendor", product.get("vendor"), warnings),
            "product_type": _capped("product_type", product.get("product_type"), warnings),
            "tags": [_capped("tags", t, warnings).strip() for t in tags if _text(t).strip()],
            "options": [_text(o) for o in product.get("options") or []],
        },
        "variant": VariantValues({str(k): _text(v) for k, v in variant.items()}),
        "brand": {"name": brand.name, "display_name": brand.label},
        "lora": {a.name: a.trigger_word or "" for a in adapters},
    }


def sample_context(brand: BrandConfig) -> dict[str, Any]:
    """A product with every field set, for checking that templates render at all."""
    product = {
        "key": "sample-product",
        "title": "Sample Product",
        "body_html": "<p>A <b>sample</b> product description.</p>",
        "vendor": "Sample Vendor",
        "product_type": "Sample Type",
        "tags": ["sample", "tag"],
        "options": [*brand.visual_options, "Size"],
    }
    variant = {opt: f"sample {opt.lower()}" for opt in brand.visual_options}
    ctx = build_context(product, variant, brand)
    ctx["lora"] = {s.name: s.trigger_word or "" for s in brand.loras}
    return ctx


# --- checking templates ---------------------------------------------------------------


def template_line(exc: BaseException) -> int | None:
    """The template line an error was raised on (Jinja rewrites tracebacks to name it)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _at_line(exc: BaseException) -> str:
    line = template_line(exc)
    return f" on template line {line}" if line is not None else ""


def _describe(exc: Exception) -> str:
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox{_at_line(exc)}: {exc}"
    if isinstance(exc, UndefinedError):
        return f"unknown variable or attribute{_at_line(exc)}: {exc.message}"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on template line {exc.lineno}: {exc.message}"
    return f"fails to render a sample product{_at_line(exc)}: {type(exc).__name__}: {exc}"


def _unknown_field(ast: nodes.Template, context: Mapping[str, Any]) -> str | None:
    """``product.titel``-style typos, named plainly (Jinja would say "'dict object' has...")."""
    for node in ast.find_all(nodes.Getattr):
        if not isinstance(node.node, nodes.Name) or node.node.name not in KNOWN_VARIABLES:
            continue
        var = node.node.name
        fields = context.get(var)
        if not isinstance(fields, Mapping):
            continue
        if node.attr in fields or hasattr(fields, node.attr):
            continue
        if var == "variant":
            if any(k.casefold() == node.attr.casefold() for k in fields):
                continue
            return (
                f"variant has no option {node.attr!r}: only visual_options vary per shot "
                f"({', '.join(fields) or 'none'})"
            )
        if var == "lora":
            return f"no LoRA named {node.attr!r} in loras ({', '.join(fields) or 'none defined'})"
        return f"{var} has no field {node.attr!r} (fields: {', '.join(fields)})"
    return None


def check_template_source(
    source: str, context: Mapping[str, Any], env: PromptSandbox
) -> str | None:
    """Why ``source`` is not a usable prompt template, or None."""
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return _describe(exc)
    unsafe = _unsafe_access(ast)
    if unsafe is not None:
        return f"attribute access {unsafe!r} is refused by the sandbox"
    unknown = meta.find_undeclared_variables(ast) - KNOWN_VARIABLES - set(env.globals)
    if unknown:
        return (
            f"unknown template variable {', '.join(repr(v) for v in sorted(unknown))} "
            f"(known: {', '.join(sorted(KNOWN_VARIABLES))})"
        )
    unknown_field = _unknown_field(ast, context)
    if unknown_field:
        return unknown_field
    try:
        env.from_string(source).render(context)
    except Exception as exc:  # any failure on a complete sample product is a config problem
        return _describe(exc)
    return None


def _check_sources(templates: Mapping[str, Any], ctx: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    env = make_environment(WordTokenCounter())
    out: list[tuple[Loc, str]] = []
    for name, spec in templates.items():
        for fname in ("prompt", "negative_prompt"):
            source = spec.get(fname) if isinstance(spec, Mapping) else getattr(spec, fname, None)
            if not isinstance(source, str):
                continue
            problem = check_template_source(source, ctx, env)
            if problem:
                out.append((("templates", str(name), fname), problem))
    return out


def template_problems(brand: BrandConfig) -> list[tuple[Loc, str]]:
    """Each template field that does not compile, uses unknown names or fails on a sample."""
    return _check_sources(brand.templates, sample_context(brand))


def raw_template_problems(raw: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """The same checks on a brand mapping that failed validation elsewhere, so that one
    ``brands check`` run reports template problems alongside field errors."""
    templates = raw.get("templates")
    if not isinstance(templates, Mapping):
        return []
    opts = raw.get("visual_options")
    raw_loras = raw.get("loras")
    loras: list[Any] = raw_loras if isinstance(raw_loras, list) else []
    stand_in = BrandConfig.model_construct(
        name=str(raw.get("name") or "brand"),
        display_name=None,
        visual_options=[str(o) for o in opts]
        if isinstance(opts, list)
        else ["Color", "Colour", "Material", "Pattern"],
        loras=[],
    )
    ctx = sample_context(stand_in)
    ctx["lora"] = {str(lo["name"]): "" for lo in loras if isinstance(lo, Mapping) and "name" in lo}
    return _check_sources(templates, ctx)


# --- rendering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPrompt:
    prompt: str
    negative_prompt: str
    token_count: int
    negative_token_count: int
    warnings: list[str] = field(default_factory=list)
    removals: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Compiled:
    prompt: Template
    negative: Template
    mentions_lora: bool


class PromptRenderer:
    """Compiles a brand's templates once; renders, sanitizes and measures prompts.

    Not thread-safe (filter warnings are collected on the instance): one per worker.
    """

    def __init__(
        self,
        brand: BrandConfig,
        token_counter: TokenCounter | None = None,
        sanitizer: Sanitizer | None = None,
        templates: Iterable[str] | None = None,
    ) -> None:
        self.brand = brand
        self.counter = token_counter or ClipTokenCounter()
        self.sanitizer = sanitizer or Sanitizer.from_brand(brand)
        self._warnings: list[str] = []
        self.env = make_environment(self.counter, self._warnings.append)
        self._compiled: dict[str, _Compiled] = {}
        for name in templates if templates is not None else brand.templates:
            self._compiled[name] = self._compile(name)

    def _compile(self, name: str) -> _Compiled:
        spec = self.brand.templates[name]
        problems: list[BrandProblem] = []
        compiled: list[Template] = []
        mentions_lora = False
        for fname in ("prompt", "negative_prompt"):
            source = getattr(spec, fname)
            try:
                ast = self.env.parse(source)
                unsafe = _unsafe_access(ast)
                if unsafe is not None:
                    raise SecurityError(f"attribute access {unsafe!r} is refused")
                if fname == "prompt":
                    mentions_lora = "lora" in meta.find_undeclared_variables(ast)
                compiled.append(self.env.from_string(source))
            except (TemplateError, SecurityError) as exc:
                problems.append(BrandProblem(f"templates.{name}.{fname}", _describe(exc)))
        if problems:
            source = str(self.brand.source_path or self.brand.name)
            raise BrandConfigError(source, problems)
        return _Compiled(prompt=compiled[0], negative=compiled[1], mentions_lora=mentions_lora)

    def _render(self, template: Template, where: str, ctx: Mapping[str, Any]) -> str:
        try:
            out = template.render(ctx)
        except UndefinedError as exc:
            raise RenderError(f"{where}{_at_line(exc)}: {exc.message}") from None
        except SecurityError as exc:
            raise RenderError(f"{where}{_at_line(exc)}: refused by the sandbox: {exc}") from None
        except Exception as exc:  # a filter or operation failing on this product's data
            raise RenderError(f"{where}{_at_line(exc)}: {type(exc).__name__}: {exc}") from None
        if len(out) > MAX_RENDER_CHARS:
            raise RenderError(f"{where}: rendered to {len(out)} characters")
        # Prompts are one line; YAML block scalars, Jinja tags and empty fields leave gaps.
        return tidy(" ".join(out.split()))

    def render(
        self,
        template: str,
        product: Mapping[str, Any],
        variant: Mapping[str, str] | None = None,
        adapters: Sequence[AdapterRef] | None = None,
    ) -> RenderedPrompt:
        """Prompt and negative prompt for one shot. Raises ``RenderError`` for this product."""
        compiled = self._compiled.get(template)
        if compiled is None:
            if template not in self.brand.templates:
                raise KeyError(template)
            compiled = self._compiled[template] = self._compile(template)
        if adapters is None:
            adapters = self.brand.adapters_for(template)
        self._warnings.clear()
        ctx = build_context(product, variant or {}, self.brand, adapters, self._warnings)
        prompt = self._render(compiled.prompt, f"{template}.prompt", ctx)
        negative = self._render(compiled.negative, f"{template}.negative_prompt", ctx)
        # Competitor names go before the trigger words are added: those are the brand's own.
        prompt, removals = self.sanitizer.clean(prompt, field="prompt")
        if not compiled.mentions_lora:
            triggers = [a.trigger_word for a in adapters if a.trigger_word]
            if triggers:
                prompt = ", ".join([*triggers, prompt]) if prompt else ", ".join(triggers)
        warnings = list(self._warnings)
        if not prompt:
            warnings.append("prompt is empty")
        n = self.counter.count(prompt)
        if n > CLIP_MAX_TOKENS:
            warnings.append(
                f"prompt is {n} tokens; the text encoder reads {CLIP_MAX_TOKENS} "
                f"({CLIP_CONTEXT_LENGTH} with start/end), so the last {n - CLIP_MAX_TOKENS} "
                "would be ignored"
            )
        neg_n = self.counter.count(negative)
        if neg_n > CLIP_MAX_TOKENS:
            warnings.append(
                f"negative prompt is {neg_n} tokens; the text encoder reads {CLIP_MAX_TOKENS}"
            )
        return RenderedPrompt(
            prompt=prompt,
            negative_prompt=negative,
            token_count=n,
            negative_token_count=neg_n,
            warnings=warnings,
            removals=list(removals),
        )
