"""The prompt sandbox: Jinja's immutable sandbox with bounded time, loops and sizes.

Jinja's own sandbox stops attribute escapes but not cost: ``range(100000)`` nested, huge
powers, ``indent(100000)`` over many lines, ``center(10**9)`` or ``s ~ s`` doubling all pass.
``PromptSandbox`` routes every costly operation through ``pipeline.brand.budget``:

- every ``for`` loop iterates through ``guard_iter`` (counted, timed), the ``range`` global
  is capped, recursive ``loop(...)`` calls are guarded too;
- all binary operators are intercepted (``**``/``*`` int size, repetition, ``+`` growth,
  ``%`` formats); ``~`` compiles to ``checked_concat``; list, tuple and dict literals to
  ``checked_literal``;
- every filter is wrapped: its size arguments are checked first (``indent``, ``center``,
  ``wordwrap``, ``replace``, ``join``, ``format``, ``tojson``, ``pprint``, ``urlize``,
  ``batch``, ``slice``, ``sum``...), its result is measured after;
- method calls (``'x'.center(10**9)``, ``str.format`` widths...) are checked the same way;
- the output is joined with a running size check, and every hook checks the clock.

Outside a render no operation runs: Jinja then cannot fold a huge constant at compile time.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import GeneratorType
from typing import Any

from jinja2 import Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.brand import budget as bud
from pipeline.brand.budget import MAX_RANGE, MAX_RENDER_CHARS, TemplateBudgetError


class BoundedTemplate(Template):
    """A template whose every render runs under a fresh budget."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        with bud.render_budget():
            return super().render(*args, **kwargs)


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles loops, ``~`` and container literals through the environment's checks."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        guarded = copy.copy(node)
        guarded.iter = nodes.Call(
            nodes.EnvironmentAttribute("guard_iter"), [node.iter], [], None, None
        ).set_lineno(node.iter.lineno)
        super().visit_For(guarded, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _checked(self, visit: Callable[..., None], node: Any, frame: Frame) -> None:
        if getattr(node, "ctx", "load") != "load":  # assignment targets stay plain
            visit(self, node, frame)
            return
        self.write("environment.checked_literal(")
        visit(self, node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._checked(CodeGenerator.visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        self._checked(CodeGenerator.visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._checked(CodeGenerator.visit_Dict, node, frame)


def bounded_range(*args: int) -> range:
    rng = range(*args)
    try:
        n = len(rng)
    except OverflowError:
        n = MAX_RANGE + 1
    if n > MAX_RANGE:
        raise TemplateBudgetError(f"range of more than {MAX_RANGE} items in template")
    return rng


class PromptSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every costly operation bounded (see the module doc)."""

    code_generator_class = _BoundedCodeGenerator
    template_class = BoundedTemplate
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = bounded_range

    def bound_filters(self, trusted: Iterable[str] = ()) -> None:
        """Wrap every registered filter (call after adding the custom ones)."""
        keep = set(trusted)
        for name, func in list(self.filters.items()):
            self.filters[name] = _bounded_filter(func, _FILTER_CHECKS.get(name), name in keep)

    # --- hooks the compiled template calls -------------------------------------------

    def concat(self, parts: Iterable[str]) -> str:
        """The output (and every block) joined with a running size check."""
        out: list[str] = []
        total = 0
        for part in parts:
            total += len(part)
            if total > MAX_RENDER_CHARS:
                err = TemplateBudgetError(f"template output over {MAX_RENDER_CHARS} characters")
                if isinstance(parts, GeneratorType):
                    parts.throw(err)  # raised at the template's yield: the error names its line
                raise err
            out.append(part)
        return "".join(out)

    def guard_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = bud.current()
        for item in iterable:
            budget.iterate()
            yield item

    def checked_concat(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        bud.current().tick()
        bud.require(sum(bud.size(p) for p in parts), "'~' concatenation in template")
        return bud.account(join(parts))  # type: ignore[no-any-return]

    def checked_literal(self, value: Any) -> Any:
        bud.current().tick()
        return bud.account(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        bud.current().tick()
        if operator == "**":
            bud.check_power(left, right)
        elif operator == "*":
            bud.check_product(left, right)
        elif operator == "+":
            bud.check_sum(left, right)
        elif operator == "%" and isinstance(left, str):
            bud.check_printf(left, right)
        return bud.account(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        bud.current().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        bud.current().tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        bud.current().tick()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (__self.guard_iter(args[0]), *args[1:])
        args, kwargs = _check_method(__obj, args, kwargs)
        return bud.account(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        fmt = super().wrap_str_format(value)
        if fmt is None:
            return None
        source = value.__self__

        @functools.wraps(fmt)
        def checked(*args: Any, **kwargs: Any) -> str:
            bud.check_str_format(source, (args, kwargs))
            return bud.account(fmt(*args, **kwargs))  # type: ignore[no-any-return]

        return checked


# --- filters -----------------------------------------------------------------------------


def _bounded_filter(
    func: Callable[..., Any], check: Callable[..., Any] | None, trusted: bool
) -> Callable[..., Any]:
    passes_context = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes the same arguments
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = bud.current()
        budget.tick()
        if check is not None:
            head, user = (args[:1], args[1:]) if passes_context else ((), args)
            user, kwargs = check(user, kwargs)
            args = (*head, *user)
        if trusted:
            with budget.paused():
                return bud.account(func(*args, **kwargs))
        return bud.account(func(*args, **kwargs))

    return bounded


Args = tuple[tuple[Any, ...], dict[str, Any]]


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], i: int, name: str, default: Any) -> Any:
    """Positional ``i`` (after the value at 0) or keyword ``name`` of a filter call."""
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else bud.size(value)


def _check_center(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    width = _arg(args, kwargs, 1, "width", 80)
    if isinstance(width, int):
        bud.require(max(width, _text_len(args[0]) if args else 0), "center() in template")
    return args, kwargs


def _check_indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    width = _arg(args, kwargs, 1, "width", 4)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(args[0]) if args else ""
    bud.require(len(text) + (text.count("\n") + 1) * pad, "indent() in template")
    return args, kwargs


def _check_wordwrap(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    text = str(args[0]) if args else ""
    width = _arg(args, kwargs, 1, "width", 79)
    wrap = _arg(args, kwargs, 3, "wrapstring", None)
    lines = len(text) // max(1, width if isinstance(width, int) else 1) + text.count("\n") + 1
    bud.require(len(text) + lines * len(str(wrap or "\n")), "wordwrap() in template")
    return args, kwargs


def _replace_estimate(text: Any, old: Any, new: Any, count: Any) -> int:
    if not isinstance(text, str | bytes) or not isinstance(old, type(text)):
        return 0
    n = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(text) + n * max(0, len(new) - len(old)) if isinstance(new, str | bytes) else 0


def _check_replace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    text = str(args[0]) if args else ""
    old, new = _arg(args, kwargs, 1, "old", ""), _arg(args, kwargs, 2, "new", "")
    estimate = _replace_estimate(text, str(old), str(new), _arg(args, kwargs, 3, "count", None))
    bud.require(estimate, "replace() in template")
    return args, kwargs


def _check_join(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    if not args:
        return args, kwargs
    sep = _arg(args, kwargs, 1, "d", "")
    items = bud.bounded_items(args[0], len(str(sep)), "join() in template")
    return (items, *args[1:]), kwargs


def _check_join_tags(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    value = args[0] if args else None
    sep = str(_arg(args, kwargs, 1, "sep", ", "))
    if isinstance(value, str):
        n = value.count(",") + 1
    else:
        value = list(value or [])
        n = len(value)
    bud.require(bud.size(value) + n * len(sep), "join_tags in template")
    return (value, *args[1:]), kwargs


def _check_format(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    if args and isinstance(args[0], str):
        bud.check_printf(args[0], (args[1:], kwargs))
    return args, kwargs


def _check_dump(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    """``tojson`` / ``pprint``: indentation repeats once per nesting level and line."""
    chars, depth = bud.measure(args[0] if args else None)
    indent = _arg(args, kwargs, 1, "indent", 1)
    step = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 1
    bud.require(chars * (2 + max(0, step) * depth), "tojson()/pprint() in template")
    return args, kwargs


def _check_urlize(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    text = str(args[0]) if args else ""
    named = ((3, "target"), (4, "rel"))
    extra = sum(len(str(_arg(args, kwargs, i, n, "") or "")) for i, n in named)
    # a link is at least 4 characters ("a.io"); each gains an <a href> tag and the extras
    bud.require(len(text) * 5 + (len(text) // 4 + 1) * (extra + 64), "urlize() in template")
    return args, kwargs


def _check_fill(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    """``batch(n, fill_with)`` / ``slice(n, fill_with)``: up to ``n`` fill items per group."""
    n = args[1] if len(args) > 1 else kwargs.get("linecount", kwargs.get("slices", 1))
    if isinstance(n, int):
        if n > MAX_RANGE:
            raise TemplateBudgetError(f"batch()/slice() of more than {MAX_RANGE} in template")
        fill = _arg(args, kwargs, 2, "fill_with", None)
        bud.require(n * bud.size(fill), "batch()/slice() fill in template")
    return args, kwargs


def _check_sum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    start = _arg(args, kwargs, 2, "start", 0)
    if not isinstance(start, int | float):
        # summing lists copies the running total for every item: quadratic
        raise TemplateBudgetError("sum() in templates adds numbers only")
    return args, kwargs


_FILTER_CHECKS: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], Args]] = {
    "center": _check_center,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "join": _check_join,
    "join_tags": _check_join_tags,
    "format": _check_format,
    "tojson": _check_dump,
    "pprint": _check_dump,
    "urlize": _check_urlize,
    "batch": _check_fill,
    "slice": _check_fill,
    "sum": _check_sum,
}


# --- methods -----------------------------------------------------------------------------


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    """Size arguments of ``str``/``bytes``/``int`` methods, checked before the call."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    what = f"{name}() in template"
    if isinstance(owner, str | bytes | bytearray):
        first = args[0] if args else None
        if name in ("center", "ljust", "rjust", "zfill"):
            width = first if first is not None else kwargs.get("width")
            if isinstance(width, int):
                bud.require(width, what)
        elif name == "expandtabs":
            tab = first if first is not None else kwargs.get("tabsize", 8)
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            if isinstance(tab, int):
                bud.require(len(owner) + tabs * tab, what)
        elif name == "replace" and len(args) >= 2:
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            bud.require(_replace_estimate(owner, args[0], args[1], count), what)
        elif name == "join" and args:
            args = (bud.bounded_items(args[0], len(owner), what),)
        elif name == "translate" and isinstance(first, Mapping):
            longest = max((bud.size(v) for v in first.values()), default=1)
            bud.require(len(owner) * longest, what)
    elif isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int):
            bud.require(length, what)
    return args, kwargs
