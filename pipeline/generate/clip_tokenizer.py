"""A ``transformers.CLIPTokenizer`` from open_clip's bundled CLIP BPE, offline.

open_clip ships OpenAI CLIP's BPE vocabulary; its ``vocab.json`` + ``merges.txt`` form is what
``CLIPTokenizer`` loads, and it tokenizes identically to OpenAI CLIP.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_clip_tokenizer_files(out_dir: Path) -> None:
    """Write ``vocab.json`` + ``merges.txt`` from open_clip's bundled CLIP BPE.

    Mirrors ``open_clip.tokenizer.SimpleTokenizer``'s construction, so
    ``transformers.CLIPTokenizer`` over these files gives OpenAI CLIP's token ids.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merges)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
