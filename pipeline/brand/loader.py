"""Loading brand YAML: parse, validate (fields, then templates), and name each problem's line.

The model lives in ``config``; template checks need the Jinja sandbox from ``templates``.
Both are composed here, so neither module imports the other's caller.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.brand.config import (
    NAME_RE,
    BrandConfig,
    BrandConfigError,
    BrandProblem,
    Loc,
    format_loc,
    located_problem,
)
from pipeline.brand.templates import raw_template_problems, template_problems
from pipeline.files import InputFileError, read_text_capped

# A brand file is a few KB; these bound what a hostile or broken one can cost.
MAX_BRAND_BYTES = 1 << 20
MAX_BRAND_NODES = 100_000
# PyYAML composes (and constructs) nodes recursively: 40 KB of "[" is a RecursionError. A
# brand file is a handful of levels deep; the parser below counts depth without recursing.
MAX_BRAND_DEPTH = 32


def parse_brand(
    raw: Any, source: str = "<brand>", root: yaml.Node | None = None, path: Path | None = None
) -> BrandConfig:
    """Validate an already-parsed brand mapping; raise ``BrandConfigError`` listing each problem."""
    if not isinstance(raw, dict):
        raise BrandConfigError(source, ["top level must be a mapping"])
    try:
        cfg = BrandConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [(tuple(err["loc"]), err["msg"]) for err in exc.errors()]
        seen = {loc for loc, _ in problems}
        problems += [p for p in raw_template_problems(raw) if p[0] not in seen]
        raise BrandConfigError(
            source, [located_problem(root, loc, msg) for loc, msg in problems]
        ) from None
    cfg.source_path = path
    problems = cfg.problems() + template_problems(cfg)
    if problems:
        raise BrandConfigError(source, [located_problem(root, loc, msg) for loc, msg in problems])
    return cfg


def load_brand(path: str | Path) -> BrandConfig:
    """Load and validate a brand YAML file; raise ``BrandConfigError`` naming each field."""
    p = Path(path)
    try:
        text = read_text_capped(p, MAX_BRAND_BYTES, "brand config")
    except InputFileError as exc:
        raise BrandConfigError(str(p), [exc.reason.removeprefix("brand config: ")]) from None
    try:
        root = compose_bounded(text)
        _refuse_alias_bombs(root)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise BrandConfigError(
            str(p), [BrandProblem(field="", message=f"invalid YAML: {problem}", line=line)]
        ) from None
    return parse_brand(raw, source=str(p), root=root, path=p.resolve())


def _refuse_deep_nesting(text: str) -> None:
    """Walk the parser's events (a state machine, no recursion) and stop at the first
    collection nested deeper than ``MAX_BRAND_DEPTH``."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_BRAND_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested more than {MAX_BRAND_DEPTH} levels deep",
                    problem_mark=event.start_mark,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def compose_bounded(text: str) -> yaml.Node | None:
    """``yaml.compose`` after the nesting-depth check (every brand YAML parse goes here)."""
    _refuse_deep_nesting(text)
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _refuse_alias_bombs(root: yaml.Node | None) -> None:
    """YAML aliases share nodes, so a small file can expand to billions of values once
    validated (the "billion laughs"). Count nodes as expanded, stopping at the cap."""
    seen, stack = 0, [(root, 0)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_BRAND_NODES:
            raise yaml.MarkedYAMLError(
                problem=f"more than {MAX_BRAND_NODES} values once aliases are expanded",
                problem_mark=getattr(node, "start_mark", None),
            )
        if depth > MAX_BRAND_DEPTH:  # aliases nested in aliases deepen what the text shows
            raise yaml.MarkedYAMLError(
                problem=f"nested more than {MAX_BRAND_DEPTH} levels deep once aliases are expanded",
                problem_mark=getattr(node, "start_mark", None),
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def located_error(path: str | Path, problems: Sequence[tuple[Loc, str]]) -> BrandConfigError:
    """A ``BrandConfigError`` for problems found after loading, with YAML line numbers."""
    try:
        text = read_text_capped(path, MAX_BRAND_BYTES, "brand config")
        root = compose_bounded(text)
    except (InputFileError, yaml.YAMLError):
        root = None
    return BrandConfigError(str(path), [located_problem(root, loc, msg) for loc, msg in problems])


def brand_warnings(cfg: BrandConfig) -> list[str]:
    """Non-fatal findings (missing local files, a name find_brand won't find), one line each."""
    out = [f"{format_loc(loc)}: {msg}" for loc, msg in cfg.file_warnings()]
    if cfg.source_path is not None and cfg.source_path.stem != cfg.name:
        out.append(
            f"name: {cfg.name!r} differs from the file name {cfg.source_path.name!r}, "
            f"so --brand {cfg.name} will not find it"
        )
    return out


FileStamp = tuple[int, int, int]  # (mtime_ns, size, inode)


def file_stamp(path: Path | None) -> FileStamp | None:
    """What tells an edited brand file from the one read before; None: no such file."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class BrandCache:
    """Loaded brand files by path, kept while the file's stamp (mtime, size, inode) is the
    one read: a stat per use notices an edit, so a changed file is read at its next use
    without a restart, and an unchanged one is not parsed (and its templates compiled) again.
    A file that does not load is remembered too (its ``BrandConfigError`` raised again) until
    it changes. Thread-safe; one per process (``brand_cache``), shared by the worker, the
    review authorisation and the web app."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[FileStamp, BrandConfig | BrandConfigError]] = {}
        self._lock = threading.Lock()

    def load(self, path: Path, *, fresh: bool = False) -> BrandConfig:
        """``load_brand(path)``, from the cache while the file is unchanged (``fresh``:
        read it regardless)."""
        key = Path(path).absolute()
        stamp = file_stamp(key)
        with self._lock:
            hit = self._seen.get(key)
        if hit is None or hit[0] != stamp or fresh or stamp is None:
            try:
                result: BrandConfig | BrandConfigError = load_brand(key)
            except BrandConfigError as exc:
                result = exc
            if stamp is not None:
                with self._lock:
                    self._seen[key] = (stamp, result)
        else:
            result = hit[1]
        if isinstance(result, BrandConfigError):
            raise result.with_traceback(None)  # (raised again: its old frames would pile up)
        return result

    def find(self, brands_dir: Path, name: str, *, fresh: bool = False) -> BrandConfig:
        """``find_brand`` through the cache."""
        return self.load(brand_path(brands_dir, name), fresh=fresh)


brand_cache = BrandCache()


def brand_path(brands_dir: Path, name: str) -> Path:
    """``brands_dir/<name>.yaml`` (or ``.yml``) that exists; ``BrandConfigError`` if none."""
    if not re.match(NAME_RE, name):
        raise BrandConfigError(str(brands_dir), [f"invalid brand name {name!r}"])
    for ext in (".yaml", ".yml"):
        candidate = brands_dir / f"{name}{ext}"
        if candidate.exists():
            return candidate
    raise BrandConfigError(str(brands_dir / f"{name}.yaml"), [f"no brand config named {name!r}"])


def find_brand(brands_dir: Path, name: str) -> BrandConfig:
    """The brand called ``name`` from ``brands_dir/<name>.yaml`` (or ``.yml``)."""
    return load_brand(brand_path(brands_dir, name))
