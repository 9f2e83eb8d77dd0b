"""The torch-free CLIP tokenizer gives open_clip's ``SimpleTokenizer`` ids, text for text."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from pipeline.brand.clip_bpe import ClipBpe
from pipeline.brand.templates import ClipTokenCounter
from tests.hostile_cases import NASTY

ORDINARY = [
    "a photo of a cat",
    "studio photo of an organic tee, prod-000123, red, soft light, white background",
    "Soft organic cotton tee no. 7. Relaxed fit; machine-wash 30°C",
    "blurry, watermark, lowres, jpeg artifacts, extra fingers",
    "it's the shopper's choice: we've, they'll, I'd, you're, I'm",
    "Fish &amp; Chips &amp;amp; more &lt;b&gt; &#39;quoted&#39; &copy; 2026",
    "Café crème brûlée — naïve façade, Straße, ÆØÅ, ﬁne ligature, ｆｕｌｌ width",
    "mojibake: cafÃ© â€œquotedâ€\x9d",
    "smart quotes “like these” and ‘these’, an ellipsis… and a dash –",
    "emoji 👕🧦 and CJK 商品写真 and Arabic صورة المنتج and Hindi उत्पाद",
    "control\x01chars\x7fand\x1b[31mterminal\x1b[0m escapes\r\nline\u2028breaks",
    "  many   spaces\tand\ttabs\n\nnewlines  ",
    "<start_of_text> literal <END_OF_TEXT> markers",
    "numbers 1234567890 3.14 1e-9 #42 @user $19.99 50% off",
    "",
    "   ",
    "x" * 500,
    "SuperCalifragilisticExpialidocious AND UPPER case",
]


def _reference() -> list[list[int]]:
    """open_clip's own ids for the same texts, in a child process (it imports torch)."""
    code = (
        "import json, sys\n"
        "from open_clip.tokenizer import SimpleTokenizer\n"
        "t = SimpleTokenizer()\n"
        "texts = json.load(sys.stdin)\n"
        "print(json.dumps([t.encode(x) for x in texts]))\n"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(_texts()),
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout))


def _texts() -> list[str]:
    rng = random.Random(30)
    alphabet = "abcXYZ019 ,.;:&#'\"-_/()[]<>éüßæ😀商\u00a0\u200b\t\n"
    noise = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(200)]
    return [*ORDINARY, *NASTY, *noise]


@pytest.fixture(scope="module")
def reference() -> list[list[int]]:
    return _reference()


def test_ids_match_open_clip(reference: list[list[int]]) -> None:
    bpe = ClipBpe()
    mismatched = [
        (text, want, got)
        for text, want in zip(_texts(), reference, strict=True)
        if (got := bpe.encode(text)) != want
    ]
    assert not mismatched, mismatched[:3]


def test_counting_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from pipeline.brand.templates import ClipTokenCounter\n"
        "assert ClipTokenCounter().count('a photo of a cat') == 5\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_counter_counts_the_ids() -> None:
    assert ClipTokenCounter().count(ORDINARY[1]) == len(ClipBpe().encode(ORDINARY[1]))
