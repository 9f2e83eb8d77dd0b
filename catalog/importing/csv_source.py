"""Reading a catalog file: checks, encoding, delimiter, and chunked records with line numbers.

Lineage needs the *physical* line of every row, even when a quoted cell spans several
lines, and ragged rows must be reported rather than dropped. pandas' C parser can do
neither (it renumbers records and skips or pads ragged rows), so the stdlib C tokenizer
(``csv.reader``, whose ``line_num`` counts physical lines) splits records, and each chunk
of valid records becomes a pandas frame of strings (``dtype=str`` semantics: every cell is
a ``str``, empty cells are ``""``, never NaN) for the vectorized key checks downstream.
Only one chunk is alive at a time, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

BLOCK = 1 << 20
SNIFF_CHARS = 1 << 16
DELIMITERS = (",", ";", "\t", "|")
DEFAULT_MAX_FIELD_CHARS = 100_000
RAW_ROW_CHARS = 2_000

# The tokenizer's own limit is global to the ``csv`` module; raise it once so that our
# per-column check (which names the column) is what reports over-long cells.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))

_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook?); export it as CSV",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive; decompress it first",
    b"\xd0\xcf\x11\xe0": "an old Excel/OLE document; export it as CSV",
    b"SQLite format 3": "a SQLite database",
}


BINARY_SNIFF_BYTES = 8192
# A physical line longer than this is a row error, skipped without being held: a 300 MB line
# of "a," would otherwise become a 150-million-field record (gigabytes) in the tokenizer.
MAX_LINE_BYTES = 8 << 20
# The header may be long (a wide feed), but the sniffer reads it whole up to this.
MAX_HEADER_CHARS = 4 << 20
# "auto" on a file whose lines mix UTF-8 and cp1252: each line decoded on its own.
MIXED_ENCODING = "utf-8/cp1252"
SHOWN_LINES = 20
_CONTROL_BYTES = [b for b in range(32) if b not in (9, 10, 12, 13)] + [127]
# rot13 is a str-to-str codec that lookup() reports as text; it can't decode bytes.
_NOT_TEXT = {"rot-13", "rot13"}


class CatalogFileError(ValueError):
    """A file that cannot be imported at all: one line naming the file (and line)."""


@dataclass(frozen=True)
class RowError:
    line: int
    column: str | None
    reason: str
    raw: str | None


@dataclass
class SourceInfo:
    path: Path
    size: int
    sha256: str
    encoding: str
    delimiter: str = ","
    header: list[str] = field(default_factory=list)
    header_line: int = 1
    has_nul: bool = False
    warnings: list[str] = field(default_factory=list)
    kind: str = "csv"  # or "xml": a Merchant Center RSS/Atom feed (catalog.importing.xml_feed)
    first: bytes = b""  # the file's first block, for telling CSV from XML


@dataclass
class Chunk:
    frame: pd.DataFrame  # columns 0..n-1 in header order; every cell a str
    lines: list[int]  # physical 1-based line where each frame row starts
    errors: list[RowError]
    bytes_read: int
    rows_read: int  # data records in this chunk, good and bad (blank lines excluded)


def _line_of(data: bytes, offset: int, lines_before: int) -> int:
    return lines_before + data[:offset].count(b"\n") + 1


def inspect_file(path: Path, encoding: str = "auto") -> SourceInfo:
    """Check that ``path`` is readable text and settle its encoding; hash it on the way.

    ``encoding``: ``auto`` accepts UTF-8 (with or without BOM) and falls back to cp1252
    with a recorded warning; ``utf-8`` refuses anything else; any other codec name is used
    as given.
    """
    if not path.exists():
        raise CatalogFileError(f"{path}: file not found")
    if not path.is_file():
        raise CatalogFileError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise CatalogFileError(f"{path}: empty file")

    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    bad_utf8: tuple[int, int] | None = None  # (line, byte offset)
    has_nul = False
    lines_before = 0
    offset = 0
    first = b""
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            if not first:
                first = block
            digest.update(block)
            has_nul = has_nul or b"\x00" in block
            if bad_utf8 is None:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    bad_utf8 = (_line_of(block, exc.start, lines_before), offset + exc.start)
            lines_before += block.count(b"\n")
            offset += len(block)
    if bad_utf8 is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            bad_utf8 = (lines_before + 1, offset)

    for magic, what in _MAGIC.items():
        if first.startswith(magic):
            raise CatalogFileError(f"{path}: binary file, looks like {what}")
    if encoding.lower() != "auto":
        check_encoding_name(encoding, first)
    utf16 = first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    wide = utf16 or _is_wide(encoding)
    if not wide and _looks_binary(first[:BINARY_SNIFF_BYTES]):
        raise CatalogFileError(f"{path}: binary file (NUL or control bytes), not CSV/TSV text")

    info = SourceInfo(path=path, size=size, sha256=digest.hexdigest(), encoding="utf-8")
    info.first = first[:BINARY_SNIFF_BYTES]
    info.has_nul = has_nul
    if utf16:
        info.encoding = "utf-16"
    elif first.startswith(codecs.BOM_UTF8) and bad_utf8 is None:
        info.encoding = "utf-8-sig"
    elif encoding.lower().replace("_", "-") in ("auto", "utf-8", "utf8"):
        if bad_utf8 is not None:
            line, where = bad_utf8
            if encoding != "auto":
                raise CatalogFileError(
                    f"{path}:{line}: not valid UTF-8 (byte offset {where}); "
                    "re-save the file as UTF-8 or pass --encoding"
                )
            _settle_legacy(info, line, where)
    else:
        check_encoding_name(encoding, first)
        _check_decodes(path, encoding, f"{path}: cannot be decoded as {encoding}")
        info.encoding = encoding

    sample = first[: SNIFF_CHARS * 4].decode(text_codec(info.encoding), errors="replace")
    if not sample.lstrip("\ufeff").strip():
        raise CatalogFileError(f"{path}: empty file (no header line)")
    return info


def _settle_legacy(info: SourceInfo, line: int, where: int) -> None:
    """A file that is not all UTF-8: cp1252 as a whole when no line of it is UTF-8 beyond
    ASCII (a legacy export), else line by line (UTF-8 where a line decodes, cp1252 where it
    doesn't), so one pasted cp1252 row doesn't turn every good UTF-8 row into mojibake."""
    utf8_lines, legacy_lines = _line_kinds(info.path)
    if not utf8_lines:
        _check_decodes(info.path, "cp1252", f"{info.path}:{line}: neither UTF-8 nor cp1252 text")
        info.encoding = "cp1252"
        info.warnings.append(
            f"{info.path}:{line}: not valid UTF-8 (byte offset {where}); decoded as cp1252"
        )
        return
    info.encoding = MIXED_ENCODING
    shown = ", ".join(map(str, legacy_lines[:SHOWN_LINES]))
    more = f" and {len(legacy_lines) - SHOWN_LINES} more" if len(legacy_lines) > SHOWN_LINES else ""
    info.warnings.append(
        f"{info.path}: line(s) {shown}{more} are not valid UTF-8 and were decoded as cp1252; "
        "the other lines are UTF-8"
    )


def _line_kinds(path: Path) -> tuple[int, list[int]]:
    """How many lines are UTF-8 beyond ASCII, and which lines are not UTF-8 at all."""
    utf8_lines, legacy = 0, []
    with path.open("rb") as fh:
        for n, raw in enumerate(_capped_lines(fh), start=1):
            if raw is None or raw.isascii():
                continue
            try:
                raw.decode("utf-8")
                utf8_lines += 1
            except UnicodeDecodeError:
                legacy.append(n)
    return utf8_lines, legacy


def _capped_lines(fh: BinaryIO | io.TextIOBase) -> Iterator[Any]:
    """Physical lines of a byte or text stream; None for a line over MAX_LINE_BYTES (bytes,
    or characters for text), which is skipped to its end without being held in memory."""
    ends: Any = b"\n" if isinstance(fh.read(0), bytes) else ("\n", "\r")
    while line := fh.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(ends):
            while (rest := fh.readline(BLOCK)) and not rest.endswith(ends):
                pass
            yield None
            continue
        yield line


def text_codec(encoding: str) -> str:
    """The codec that reads ``encoding`` as a stream (line-by-line files read as UTF-8 where
    they can; ``_text_lines`` does the per-line fallback)."""
    return "utf-8" if encoding == MIXED_ENCODING else encoding


def _text_lines(counter: io.RawIOBase, encoding: str, errors: list[RowError]) -> Iterator[str]:
    """The file's physical lines as text, for ``csv.reader`` (which counts them for line
    numbers). A line over MAX_LINE_BYTES, or one that no codec can read, is a RowError and
    stands in as an empty line, so memory stays bounded and later line numbers stay right."""
    buffered = io.BufferedReader(counter, BLOCK)
    if encoding != MIXED_ENCODING:
        text = io.TextIOWrapper(buffered, encoding, newline="")
        for n, line in enumerate(_capped_lines(text), start=1):
            if line is None:
                errors.append(RowError(n, None, _too_long(), None))
            yield "\n" if line is None else line
        return
    for n, raw in enumerate(_capped_lines(buffered), start=1):
        if raw is None:
            errors.append(RowError(n, None, _too_long(), None))
            yield "\n"
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            try:
                yield raw.decode("cp1252")
            except UnicodeDecodeError:
                errors.append(RowError(n, None, "neither UTF-8 nor cp1252 text", None))
                yield "\n"


def _too_long() -> str:
    return f"line is longer than {MAX_LINE_BYTES >> 20} MiB; skipped"


def _is_wide(encoding: str) -> bool:
    return encoding.lower().replace("_", "-").startswith(("utf-16", "utf-32", "utf16", "utf32"))


def _looks_binary(sample: bytes) -> bool:
    """A binary file, as opposed to text with a stray NUL (which only fails its own row):
    NULs over 1% of the first bytes, or C0 control bytes (other than tab, CR, LF, FF) over
    10% of them, as in compressed or random data."""
    if not sample:
        return False
    controls = sum(sample.count(b) for b in _CONTROL_BYTES)
    return sample.count(0) * 100 > len(sample) or controls * 10 > len(sample)


def check_encoding_name(encoding: str, first: bytes = b"") -> None:
    """Refuse an ``--encoding`` that can't decode a text file: unknown, a bytes-to-bytes codec
    (base64, hex, zlib, rot13), or UTF-16/32 without a byte-order mark (its byte order is a
    guess: name utf-16-le or utf-16-be)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise CatalogFileError(f"--encoding {encoding!r}: unknown encoding") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_TEXT:
        raise CatalogFileError(
            f"--encoding {encoding!r}: {info.name} is not a text encoding (use e.g. utf-8, "
            "cp1252, latin-1, utf-16-le)"
        )
    boms = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
    if info.name in ("utf-16", "utf-32") and not first.startswith(boms):
        raise CatalogFileError(
            f"--encoding {encoding!r}: the file has no byte-order mark, so its byte order is "
            f"unknown; pass {info.name}-le or {info.name}-be"
        )


def _check_decodes(path: Path, encoding: str, message: str) -> None:
    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as fh:
        try:
            while block := fh.read(BLOCK):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise CatalogFileError(f"{message} ({exc.reason})") from None


def read_sample(info: SourceInfo) -> str:
    """The start of the file for sniffing: at least SNIFF_CHARS, and always through the end of
    the header line and the line after it (a 100k-column header is longer than 64 KiB), up to
    MAX_HEADER_CHARS."""
    encoding = "utf-8" if info.encoding == MIXED_ENCODING else info.encoding
    with info.path.open("r", encoding=encoding, errors="replace", newline="") as fh:
        sample = fh.read(SNIFF_CHARS)
        while len(sample) < MAX_HEADER_CHARS and _lines_in(sample) < 2:
            more = fh.read(len(sample))
            if not more:
                return sample
            sample += more
    if _lines_in(sample) < 1 and len(sample) >= MAX_HEADER_CHARS:
        raise CatalogFileError(
            f"{info.path}:{info.header_line}: the header line is longer than "
            f"{MAX_HEADER_CHARS >> 20} Mi characters"
        )
    return sample


def _lines_in(sample: str) -> int:
    """Complete non-blank lines at the start of ``sample`` (at most 2 are counted)."""
    n = 0
    for line in sample.splitlines(keepends=True)[:64]:
        if line.endswith(("\n", "\r")) and line.strip():
            n += 1
            if n == 2:
                break
    return n


def header_candidates(sample: str) -> list[tuple[str, list[str], int]]:
    """``(delimiter, header fields, header line)`` for each candidate delimiter."""
    out = []
    for delim in DELIMITERS:
        reader = csv.reader(io.StringIO(sample), delimiter=delim)
        for rec in reader:
            if any(cell.strip() for cell in rec):
                out.append((delim, [clean_header(c) for c in rec], reader.line_num))
                break
    return out


def clean_header(name: str) -> str:
    return name.replace("\ufeff", "").strip()


class _CountingReader(io.RawIOBase):
    """Counts bytes as the text layer pulls them, for a byte-accurate progress bar."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return n or 0


def _raw(delim: str, rec: list[str]) -> str:
    return delim.join(rec)[:RAW_ROW_CHARS]


def iter_chunks(
    info: SourceInfo,
    chunk_rows: int = 20_000,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Chunk]:
    """Yield chunks of well-formed records after the header; bad rows become ``RowError``s."""
    ncols = len(info.header)
    delim = info.delimiter
    header = info.header
    with info.path.open("rb") as binary:
        counter = _CountingReader(binary)
        line_errors: list[RowError] = []
        lines_in = _text_lines(counter, info.encoding, line_errors)
        reader = csv.reader(lines_in, delimiter=delim, quotechar='"', doublequote=True)
        # Skip up to and including the header record (leading blank lines are allowed).
        while reader.line_num < info.header_line:
            next(reader)
        records: list[list[str]] = []
        lines: list[int] = []
        errors: list[RowError] = []
        rows = 0
        prev = reader.line_num
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                errors += line_errors
                break
            except csv.Error as exc:
                rows += 1
                errors.append(RowError(prev + 1, None, f"unreadable row: {exc}", None))
                prev = reader.line_num
                continue
            line = prev + 1
            prev = reader.line_num
            if line_errors:  # lines the reader skipped (too long, undecodable): their rows
                rows += len(line_errors)
                errors += line_errors
                line_errors.clear()
            if not any(rec):  # blank line, or a row of empty cells (",,,,")
                continue
            rows += 1
            n = len(rec)
            if n != ncols:
                if n > ncols and not any(rec[ncols:]):
                    del rec[ncols:]  # trailing empty cells some spreadsheets add
                else:
                    reason = f"expected {ncols} fields, found {n}"
                    if _unterminated(rec):
                        reason = f"quoted field is never closed; {reason}"
                    errors.append(RowError(line, None, reason, _raw(delim, rec)))
                    continue
            if max(map(len, rec)) > max_field_chars:
                col = next(i for i, v in enumerate(rec) if len(v) > max_field_chars)
                reason = f"field is {len(rec[col])} characters; the limit is {max_field_chars}"
                errors.append(RowError(line, header[col], reason, _raw(delim, rec)))
                continue
            if info.has_nul and any("\x00" in v for v in rec):
                col = next(i for i, v in enumerate(rec) if "\x00" in v)
                errors.append(RowError(line, header[col], "contains a NUL byte", None))
                continue
            records.append(rec)
            lines.append(line)
            if len(records) >= chunk_rows:
                yield make_chunk(records, lines, errors, counter.count, rows)
                if on_progress:
                    on_progress(counter.count)
                records, lines, errors, rows = [], [], [], 0
        if records and _unterminated(records[-1]):
            rec = records.pop()
            line = lines.pop()
            errors.append(RowError(line, None, "quoted field is never closed", _raw(delim, rec)))
        if records or errors or rows:
            yield make_chunk(records, lines, errors, counter.count, rows)
        if on_progress:
            on_progress(counter.count)


def _unterminated(rec: list[str]) -> bool:
    """A last record that swallowed the file's final newline(s) ran into EOF inside quotes."""
    return any(v.endswith(("\n", "\r")) for v in rec)


def make_chunk(
    records: list[list[str]], lines: list[int], errors: list[RowError], nbytes: int, rows: int
) -> Chunk:
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    return Chunk(frame=frame, lines=lines, errors=errors, bytes_read=nbytes, rows_read=rows)
