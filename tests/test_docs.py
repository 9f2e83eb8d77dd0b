"""The docs stay true to the code: generated references current, README short, links alive."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import typer.main

from pipeline.settings import Settings
from tasks.cli import reference
from tasks.cli.app import app

ROOT = reference.ROOT
README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text outside fenced blocks and code spans (a link there is an example)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _slugs(path: Path) -> set[str]:
    """GitHub's anchors for the headings of ``path`` (repeats get -1, -2...)."""
    seen: Counter[str] = Counter()
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return out


def _links(path: Path) -> list[str]:
    text = _prose(path.read_text(encoding="utf-8"))
    return _INLINE_LINK.findall(text) + _REF_LINK.findall(text)


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of ``path`` to a missing file, a file outside the repository, or a
    heading the target does not have."""
    problems = []
    for target in _links(path):
        if _SCHEME.match(target):
            continue  # https:, mailto:: not ours to check offline
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif not dest.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _slugs(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


def test_generated_references_match_the_code() -> None:
    stale = reference.stale()
    assert not stale, f"stale: {[str(p) for p in stale]}; run `make docs`"


def test_check_names_the_stale_file_and_a_rewrite_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = reference.rendered()
    reference.write(tmp_path, texts)
    assert reference.main(["--check"], root=tmp_path) == 0
    cli = tmp_path / reference.CLI_DOC
    cli.write_text(cli.read_text(encoding="utf-8").replace("## shotline run", "## shotline go"))
    capsys.readouterr()
    assert reference.main(["--check"], root=tmp_path) == 1
    err = capsys.readouterr().err
    assert str(reference.CLI_DOC) in err
    assert str(reference.CONFIG_DOC) not in err
    assert cli.read_text(encoding="utf-8") != texts[reference.CLI_DOC]  # --check wrote nothing
    (tmp_path / reference.CONFIG_DOC).unlink()
    assert reference.main([], root=tmp_path) == 0
    assert reference.stale(tmp_path) == []
    assert cli.read_text(encoding="utf-8") == texts[reference.CLI_DOC]


def test_rendering_ignores_the_terminal_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = reference.rendered()
    monkeypatch.setenv("COLUMNS", "31")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("SHOTLINE_BATCH_SIZE", "13")
    monkeypatch.setenv("SHOTLINE_VAR_DIR", "/elsewhere")
    after = reference.rendered()
    assert after == before
    for text in after.values():
        assert "\x1b" not in text
        assert "/elsewhere" not in text


def test_every_command_option_and_setting_is_in_the_references() -> None:
    texts = reference.rendered()
    cli, config = texts[reference.CLI_DOC], texts[reference.CONFIG_DOC]
    root = typer.main.get_command(app)

    def walk(command: object, path: str) -> list[tuple[str, object]]:
        found = [(path, command)]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, f"{path} {name}")
        return found

    commands = walk(root, "shotline")
    assert len(commands) > 20  # groups and their subcommands, not only the top level
    for path, command in commands:
        assert f"\n## {path}\n" in cli, path
        options = [p for p in getattr(command, "params", []) if p.param_type_name == "option"]
        for param in options:
            for opt in param.opts + param.secondary_opts:
                assert opt in cli, f"{path} {opt}"
    for name in Settings.model_fields:
        assert f"| `SHOTLINE_{name.upper()}` |" in config, name
    # A default shown is the code's, and a comment in the code becomes the description.
    assert "| `SHOTLINE_CPU_BATCH_SIZE` | int | `16` | Shots per gate/publish task" in config
    assert "| `SHOTLINE_FINALIZE_THREADS` | int (&gt;= 1) | `2` |" in config


def test_readme_is_a_first_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_relative_links_point_to_files_that_exist() -> None:
    files = _markdown_files()
    assert len(files) >= 6  # README plus architecture, operations, benchmarks, cli, configuration
    problems = {p.name: broken_links(p) for p in files}
    assert not {name: found for name, found in problems.items() if found}


def test_the_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "README.md").write_text("# shotline\n", encoding="utf-8")
    (repo / "docs" / "cli.md").write_text("# CLI\n\n## shotline run\n", encoding="utf-8")
    (tmp_path / "outside.md").write_text("x\n", encoding="utf-8")
    page = repo / "docs" / "page.md"
    page.write_text(
        "[ok](../README.md) [gone](missing.md) [anchor](cli.md#no-such-heading)\n"
        "[good anchor](cli.md#shotline-run) [out](../../outside.md)\n"
        "`[in code](nowhere.md)` [web](https://example.com/x.md)\n"
        "```\n[fenced](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, repo) == [
        "missing.md: no such file",
        "cli.md#no-such-heading: no heading #no-such-heading in cli.md",
        "../../outside.md: outside the repository",
    ]
