"""What one template render may cost: time, steps, loop iterations and the size of values.

A brand template is configuration, but configuration can still be hostile or just wrong:
``{% for a in range(9999) %}{% for b in range(9999) %}`` or ``{% set s = s ~ s %}`` thirty
times would pin a worker or exhaust its memory. The sandbox (``pipeline.brand.sandbox``)
calls into this module at every operation that can cost more than the template's own
size (loops, calls, filters, arithmetic, concatenation, literals) and each check happens
*before* the expensive work, so a refused render has allocated little.

The invariant: every value a template produces is at most ``MAX_VALUE_CHARS`` characters
when printed (measured through nested lists and dicts, stopping as soon as the cap is
passed, so measuring is bounded too) and at most ``MAX_DEPTH`` levels deep; all values a
render produces together are at most ``MAX_WORK_CHARS``.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError

# No template output may exceed this: guards against a template that multiplies text.
MAX_RENDER_CHARS = 200_000
MAX_VALUE_CHARS = MAX_RENDER_CHARS
MAX_WORK_CHARS = 20 * MAX_RENDER_CHARS
MAX_DEPTH = 32
MAX_INT_BITS = 4096  # about 1,230 decimal digits
MAX_RANGE = 10_000
MAX_LOOP_ITERATIONS = 100_000
MAX_STEPS = 1_000_000
MAX_RENDER_SECONDS = 2.0


class TemplateBudgetError(SecurityError):
    """A template went past one of the limits above (a config problem, not a data one)."""


@dataclass
class Budget:
    deadline: float
    steps: int = 0
    iterations: int = 0
    work: int = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateBudgetError(f"template takes more than {MAX_STEPS} steps")
        if time.monotonic() > self.deadline:
            raise TemplateBudgetError(f"template takes longer than {MAX_RENDER_SECONDS:g} s")

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise TemplateBudgetError(
                f"template loops more than {MAX_LOOP_ITERATIONS} times in one render"
            )
        self.tick()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent in our own filters (a tokenizer loading once) is not the template's."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.deadline += time.monotonic() - start


_CURRENT: ContextVar[Budget | None] = ContextVar("shotline_template_budget", default=None)


@contextmanager
def render_budget() -> Iterator[Budget]:
    budget = Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS)
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def current() -> Budget:
    """The running render's budget. Outside a render (Jinja folding constants while it
    compiles) there is none: the operation is refused and so runs, bounded, at render time."""
    budget = _CURRENT.get()
    if budget is None:
        raise TemplateBudgetError("template operations run only inside a render")
    return budget


# --- measuring values -------------------------------------------------------------------


def measure(value: Any, limit: int = MAX_VALUE_CHARS) -> tuple[int, int]:
    """(characters, nesting depth) of ``value`` printed, counted until ``limit`` is passed.

    Every node counts at least 1, so the walk visits at most ``limit`` nodes even when a
    list holds the same big list many times (which ``str()`` would expand every time).
    """
    total, depth = 0, 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack and total <= limit and depth <= MAX_DEPTH:
        obj, level = stack.pop()
        depth = max(depth, level)
        if isinstance(obj, str | bytes | bytearray):
            total += max(1, len(obj))
        elif isinstance(obj, int):
            total += 1 + obj.bit_length() // 3
        elif isinstance(obj, Mapping):
            total += 2
            stack.extend((k, level + 1) for k in obj)
            stack.extend((v, level + 1) for v in obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            total += 2
            stack.extend((item, level + 1) for item in obj)
        else:  # numbers, None, Undefined, macros, generators: printed small
            total += 1
    return total, depth


def size(value: Any) -> int:
    return measure(value)[0]


def account(value: Any) -> Any:
    """Refuse ``value`` if it breaks the invariant; add it to the render's work."""
    chars, depth = measure(value)
    if chars > MAX_VALUE_CHARS:
        raise TemplateBudgetError(f"template builds a value over {MAX_VALUE_CHARS} characters")
    if depth > MAX_DEPTH:
        raise TemplateBudgetError(f"template nests values over {MAX_DEPTH} levels deep")
    budget = current()
    budget.work += chars
    if budget.work > MAX_WORK_CHARS:
        raise TemplateBudgetError(
            f"template builds over {MAX_WORK_CHARS} characters of values in one render"
        )
    return value


def require(estimate: int, what: str) -> None:
    """Refuse an operation whose result would be over the value cap, before running it."""
    if estimate > MAX_VALUE_CHARS:
        raise TemplateBudgetError(f"{what} would build over {MAX_VALUE_CHARS} characters")


def bounded_items(items: Iterable[Any], sep_len: int, what: str) -> Iterator[Any]:
    """``items`` passed through while their joined size stays under the cap (for joins of
    generators, which cannot be measured up front)."""
    total = 0
    for item in items:
        total += size(item) + sep_len
        require(total, what)
        yield item


# --- operators ---------------------------------------------------------------------------


def _int_bits(n: int) -> int:
    return abs(n).bit_length()


def check_power(left: Any, right: Any) -> None:
    if not (isinstance(left, int) and isinstance(right, int)) or right <= 0 or abs(left) <= 1:
        return
    if _int_bits(left) * right > MAX_INT_BITS:
        raise TemplateBudgetError(f"number too large in template (over {MAX_INT_BITS} bits)")


def check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise TemplateBudgetError(f"number too large in template (over {MAX_INT_BITS} bits)")
        return
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int) and n > 0:
            require(size(seq) * n, "repetition too large in template:")


def check_sum(left: Any, right: Any) -> None:
    seqs = str | bytes | list[Any] | tuple[Any, ...]
    if isinstance(left, seqs) and isinstance(right, seqs):
        require(size(left) + size(right), "concatenation in template")


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)


def check_printf(fmt: str, args: Any) -> None:
    """``fmt % args`` (the ``%`` operator, the ``format`` filter): widths and repeats."""
    fields = 0
    for m in _PRINTF.finditer(fmt):
        if m.group(3) == "%":
            continue
        fields += 1
        for number in (m.group(1), m.group(2)):
            if number == "*":
                raise TemplateBudgetError("'*' widths are not allowed in template formats")
            if number is not None:
                require(int(number), "format width in template")
    require(len(fmt) + fields * size(args), "formatting in template")


def check_str_format(fmt: str, args: Any) -> None:
    """``'{:>9}'.format(...)``: widths, nested width fields and repeated fields."""
    fields = 0
    for _literal, field, spec, _conv in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        spec = spec or ""
        if "{" in spec:
            raise TemplateBudgetError("nested format fields are not allowed in templates")
        for number in re.findall(r"\d+", spec):
            require(int(number), "format width in template")
    require(len(fmt) + fields * size(args), "formatting in template")
