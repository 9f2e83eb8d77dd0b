"""Source images named by the catalog: references, fetching and decoding (pure stages).

``refs`` turns a catalog cell into a URL, ``fetch`` downloads it under the policy (roots,
address checks, caps, timeouts), ``decode`` turns the bytes into sRGB RGB(A) pixels.
"""
