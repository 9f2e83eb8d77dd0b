"""One atomic writer for pipeline/, and bounded, non-blocking reads of user-named files."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from pipeline import files
from pipeline.digests import sha256_file
from pipeline.files import (
    InputFileError,
    atomic_write_bytes,
    publish_dir,
    read_capped,
    read_text_capped,
)

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"


def test_temp_file_and_rename_is_written_once() -> None:
    # Every atomic write in pipeline/ goes through pipeline.files.
    offenders = []
    for path in PIPELINE.rglob("*.py"):
        if path.name == "files.py" and path.parent == PIPELINE:
            continue
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"os\.replace|os\.rename|mkstemp|mkdtemp|NamedTemporaryFile", text):
            offenders.append(f"{path.relative_to(PIPELINE)}: {m.group()}")
    assert offenders == []


def test_atomic_write_keeps_the_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a" / "f.json"
    atomic_write_bytes(target, b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp file left


def test_publish_dir_builds_aside_and_survives_a_race(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def complete(p: Path) -> bool:
        return (p / "done").is_file()

    def build(p: Path) -> None:
        assert p.parent == tmp_path and p != target
        (p / "done").write_text("1")

    # A stale, half-written folder is replaced.
    target.mkdir()
    (target / "junk").write_text("x")
    assert publish_dir(target, build, complete) == target
    assert sorted(p.name for p in target.iterdir()) == ["done"]
    # Two builders at once: both end with the complete folder, no temp folders remain.
    raced = tmp_path / "raced"
    threads = [
        threading.Thread(target=publish_dir, args=(raced, build, complete)) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert complete(raced)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "raced"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(p: Path) -> None:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        publish_dir(tmp_path / "m", build, lambda p: False)
    assert list(tmp_path.iterdir()) == []


# --- reading ---------------------------------------------------------------------------


def test_read_capped_reads_small_regular_files(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    assert read_capped(f, 5) == b"hello"
    assert read_text_capped(f, 10) == "hello"


def test_read_capped_refuses_large_files(tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    with f.open("wb") as fh:
        fh.truncate(50 << 20)  # sparse: no disk used
    with pytest.raises(InputFileError, match=r"big\.bin: brand config: file is 50\.0 MiB"):
        read_capped(f, 1 << 20, "brand config")


def test_fifo_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def attempt() -> None:
        for reader in (
            lambda: read_capped(fifo, 100, "image"),
            lambda: sha256_file(fifo),
            lambda: read_capped("/dev/zero", 100, "image"),
            lambda: sha256_file(Path("/dev/zero")),
        ):
            try:
                reader()
            except InputFileError as exc:
                result.append(exc)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a reader blocked on a FIFO or read /dev/zero without end"
    assert len(result) == 4
    assert all("not a regular file" in str(e) for e in result)
    assert str(fifo) in str(result[0])


def test_missing_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nope\.yaml: brand config: file not found"):
        read_capped(tmp_path / "nope.yaml", 10, "brand config")
    with pytest.raises(InputFileError, match="is a directory"):
        read_capped(tmp_path, 10)
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(InputFileError, match="not UTF-8"):
        read_text_capped(tmp_path / "latin1.txt", 10)


def test_the_helpers_are_what_the_readers_use() -> None:
    # The brand loader, LoRA/model checks, logos, C2PA material: all through pipeline.files.
    users = [
        p.relative_to(PIPELINE).as_posix()
        for p in PIPELINE.rglob("*.py")
        if re.search(r"from pipeline\.(files|images) import", p.read_text(encoding="utf-8"))
    ]
    for module in (
        "brand/loader.py",
        "digests.py",
        "gate/scores.py",
        "gate/provenance.py",
        "gate/stage.py",
        "generate/lora.py",
        "generate/modelspec.py",
        "review/contact_sheet.py",
        "review/imagediff.py",
    ):
        assert module in users, module
    assert files.InputFileError.__mro__[1] is ValueError  # a bad input: never retried
