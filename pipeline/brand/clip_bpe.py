"""CLIP's BPE tokenizer for counting prompt tokens, without torch.

open_clip's ``SimpleTokenizer`` is the reference (OpenAI CLIP's tokenizer, with the BPE
vocabulary open_clip ships), but importing ``open_clip.tokenizer`` imports torch and the
whole of open_clip: seconds and a gigabyte for a command that renders text (``plan``). This is
the same algorithm over the same vocabulary file, with its cleaning (ftfy, HTML unescaping,
whitespace, lower case), found without importing open_clip; ``tests/pipeline/
test_clip_bpe.py`` checks it gives ``SimpleTokenizer``'s ids on hostile and ordinary text.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import itertools
from functools import lru_cache
from pathlib import Path

import ftfy
import regex

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2  # what SimpleTokenizer reads of the file
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# Printable ASCII with no "&": ftfy and HTML unescaping leave it as it is (none of their fixes
# applies to it), so the 50 us of ftfy a prompt are skipped for most catalog text.
_PLAIN = regex.compile(r"[ -%'-~]*")


def default_bpe() -> Path:
    """open_clip's bundled vocabulary, located without running its ``__init__`` (torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed: its CLIP vocabulary is needed")
    return Path(next(iter(spec.submodule_search_locations))) / BPE_FILE


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def clean(text: str) -> str:
    """SimpleTokenizer's ``lower`` cleaning: ftfy, HTML unescaped twice, whitespace, lower."""
    if _PLAIN.fullmatch(text) is None:
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class ClipBpe:
    """``encode(text)``: the token ids ``open_clip.tokenizer.SimpleTokenizer().encode`` gives
    (no start/end tokens)."""

    def __init__(self, bpe_path: Path | None = None) -> None:
        with gzip.open(bpe_path or default_bpe(), "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")[1 : _N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.byte_encoder = bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += SPECIAL_TOKENS
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks = {(m[0], m[1]): i for i, m in enumerate(merges)}
        self.cache: dict[str, list[str]] = {t: [t] for t in SPECIAL_TOKENS}
        self._ids: dict[str, list[int]] = {}  # pre-token -> ids: catalog words repeat
        self.pat = regex.compile(
            "|".join(SPECIAL_TOKENS)
            + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def bpe(self, token: str) -> list[str]:
        """The BPE pieces of one pre-token (its bytes as characters), merges by rank."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        word = [*token[:-1], token[-1] + "</w>"]
        ranks = self.bpe_ranks
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda p: ranks.get(p, _NO_RANK))
            if best not in ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        known = self._ids
        for token in self.pat.findall(clean(text)):
            got = known.get(token)
            if got is None:
                chars = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
                got = [self.encoder[piece] for piece in self.bpe(chars)]
                if len(known) < _MAX_CACHED:
                    known[token] = got
            ids.extend(got)
        return ids


_NO_RANK = float("inf")
_MAX_CACHED = 200_000  # pre-tokens whose ids are kept (a catalog's vocabulary, bounded)
