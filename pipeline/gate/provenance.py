"""AI-provenance metadata on the final file: an XMP packet, and optionally a C2PA manifest.

The XMP packet carries IPTC ``DigitalSourceType = trainedAlgorithmicMedia`` (Google Merchant
Center asks for it on AI-generated product images) and, in our own namespace, the shot id,
model id/digest and the LoRAs with their sha256 pins. It is written by Pillow while encoding:
PNG ``iTXt XML:com.adobe.xmp``, JPEG ``APP1``, WebP ``XMP `` chunk.

C2PA signing comes last: any byte written after it invalidates the credential. The order in
``Gate.finalize`` is watermark (pixels) -> encode with XMP -> verify -> C2PA sign.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.files import InputFileError, read_capped
from pipeline.images import opened_image
from pipeline.types import ProvenanceInfo

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_SHOTLINE = "http://ns.shotline.dev/xmp/1.0/"
PREFIXES = {
    NS_X: "x",
    NS_RDF: "rdf",
    NS_IPTC_EXT: "Iptc4xmpExt",
    NS_XMP: "xmp",
    NS_SHOTLINE: "shotline",
}
for _uri, _prefix in PREFIXES.items():
    ET.register_namespace(_prefix, _uri)

FORMATS: dict[str, tuple[str, str]] = {
    # fmt -> (content type, file extension)
    "png": ("image/png", "png"),
    "jpeg": ("image/jpeg", "jpg"),
    "webp": ("image/webp", "webp"),
}
JPEG_QUALITY = 95
WEBP_QUALITY = 95
# Untrusted files: a packet this large is not ours, and we do not parse it.
MAX_XMP_BYTES = 1 << 20
MAX_PEM_BYTES = 1 << 20  # a certificate chain or key file


class ProvenanceError(ValueError):
    """Provenance could not be written (bad format, missing signing material)."""


def normalize_format(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    f = {"jpg": "jpeg"}.get(f, f)
    if f not in FORMATS:
        raise ProvenanceError(f"unsupported output format {fmt!r}; use png, jpeg or webp")
    return f


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def build_xmp(info: ProvenanceInfo, extra: dict[str, str] | None = None) -> bytes:
    """The XMP packet for ``info`` (+ ``extra`` properties in the shotline namespace).

    Values come from the catalog (untrusted): ElementTree escapes them."""
    meta = ET.Element(_q(NS_X, "xmpmeta"))
    rdf = ET.SubElement(meta, _q(NS_RDF, "RDF"))
    desc = ET.SubElement(rdf, _q(NS_RDF, "Description"), {_q(NS_RDF, "about"): ""})
    simple = {
        _q(NS_IPTC_EXT, "DigitalSourceType"): TRAINED_ALGORITHMIC_MEDIA,
        _q(NS_XMP, "CreatorTool"): "shotline",
        _q(NS_SHOTLINE, "ShotId"): str(info.shot_id),
        _q(NS_SHOTLINE, "ModelId"): info.model_id,
        _q(NS_SHOTLINE, "ModelDigest"): info.model_digest or "",
        _q(NS_SHOTLINE, "Brand"): info.brand,
        _q(NS_SHOTLINE, "Sku"): info.sku,
        _q(NS_SHOTLINE, "Template"): info.template,
    }
    for name, value in (extra or {}).items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
            raise ProvenanceError(f"invalid XMP property name {name!r}")
        simple[_q(NS_SHOTLINE, name)] = value
    for tag, value in simple.items():
        ET.SubElement(desc, tag).text = value
    # One "name@sha256" item per LoRA: an ordered array of plain strings reads back with any
    # XMP tool without registering struct types.
    loras = ET.SubElement(desc, _q(NS_SHOTLINE, "Loras"))
    seq = ET.SubElement(loras, _q(NS_RDF, "Seq"))
    for lora in info.loras:
        item = f"{lora.get('name', '')}@{lora.get('sha256', '')}"
        ET.SubElement(seq, _q(NS_RDF, "li")).text = item
    body = ET.tostring(meta, encoding="unicode")
    packet = (
        f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{body}\n<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def encode_image(image: Image.Image, fmt: str, xmp: bytes | None = None) -> bytes:
    """Encode ``image`` as png/jpeg/webp with the XMP packet embedded.

    JPEG is written 4:4:4 (``subsampling=0``): chroma subsampling would blur the detail the
    watermark and the product photo both need.
    """
    fmt = normalize_format(fmt)
    rgb = image.convert("RGB")
    buf = io.BytesIO()
    if fmt == "png":
        from PIL.PngImagePlugin import PngInfo

        pnginfo = PngInfo()
        if xmp is not None:
            pnginfo.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"), zip=False)
        rgb.save(buf, "PNG", pnginfo=pnginfo, optimize=False, compress_level=6)
    elif fmt == "jpeg":
        kwargs: dict[str, Any] = {"quality": JPEG_QUALITY, "subsampling": 0}
        if xmp is not None:
            kwargs["xmp"] = xmp
        rgb.save(buf, "JPEG", **kwargs)
    else:
        kwargs = {"quality": WEBP_QUALITY, "method": 4}
        if xmp is not None:
            kwargs["xmp"] = xmp
        rgb.save(buf, "WEBP", **kwargs)
    return buf.getvalue()


def _raw_xmp(data: bytes) -> bytes | None:
    with opened_image(data, None, max_pixels=2**62) as im:  # metadata only: no pixels decoded
        raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if raw is None:
        return None
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, name = tag[1:].split("}", 1)
        return ns, name
    return "", tag


def _key(tag: str) -> str:
    ns, name = _local(tag)
    return f"{PREFIXES.get(ns, ns)}:{name}" if ns else name


def parse_xmp(raw: bytes) -> dict[str, Any]:
    """Flatten an XMP packet to ``{"prefix:Name": value}`` (arrays become lists).

    The packet comes from an untrusted file: DTDs (entity expansion) are refused outright.
    """
    if len(raw) > MAX_XMP_BYTES or re.search(rb"<!(DOCTYPE|ENTITY)", raw, re.IGNORECASE):
        return {}
    text = raw.decode("utf-8", errors="replace")
    start = text.find("<x:xmpmeta")
    if start < 0:
        start = text.find("<rdf:RDF")
    end_tag = "</x:xmpmeta>" if text.startswith("<x:xmpmeta", start) else "</rdf:RDF>"
    end = text.find(end_tag)
    if start < 0 or end < 0:
        return {}
    try:
        root = ET.fromstring(text[start : end + len(end_tag)])
    except ET.ParseError:
        return {}
    out: dict[str, Any] = {}
    for desc in root.iter(_q(NS_RDF, "Description")):
        for attr, value in desc.attrib.items():
            if _local(attr)[0] != NS_RDF:
                out[_key(attr)] = value
        for child in desc:
            items = [li.text or "" for li in child.iter(_q(NS_RDF, "li"))]
            out[_key(child.tag)] = items if len(child) else (child.text or "")
    return out


def read_xmp(data: bytes) -> dict[str, Any]:
    """The XMP properties of an encoded image (``{}`` when there are none)."""
    try:
        raw = _raw_xmp(data)
    except (OSError, ValueError):
        return {}
    return parse_xmp(raw) if raw else {}


# --- C2PA -------------------------------------------------------------------------------


@dataclass(frozen=True)
class C2paSigner:
    """Signing material for C2PA: a PEM certificate chain (leaf first) and its PEM key."""

    cert_chain_pem: bytes
    private_key_pem: bytes
    alg: str  # es256 | es384 | ps256 | ed25519
    tsa_url: str | None = None

    @classmethod
    def from_files(cls, cert: Path, key: Path, tsa_url: str | None = None) -> C2paSigner:
        try:
            cert_pem = read_capped(cert, MAX_PEM_BYTES, "C2PA certificate")
            key_pem = read_capped(key, MAX_PEM_BYTES, "C2PA key")
        except InputFileError as exc:
            raise ProvenanceError(f"C2PA signing material unreadable: {exc}") from None
        return cls(cert_pem, key_pem, signing_alg(key_pem), tsa_url)


def signing_alg(key_pem: bytes) -> str:
    """The C2PA algorithm matching a PEM private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise ProvenanceError(f"C2PA private key is not a readable PEM key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(
            key.curve.name, "es256"
        )
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ProvenanceError("C2PA private key must be EC (P-256/384/521), RSA or Ed25519")


def c2pa_manifest(info: ProvenanceInfo, content_type: str) -> dict[str, Any]:
    return {
        "claim_generator_info": [{"name": "shotline", "version": "0.1.0"}],
        "title": f"shot {info.shot_id}",
        "format": content_type,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": {"name": "shotline"},
                            "parameters": {
                                "shot_id": info.shot_id,
                                "model_id": info.model_id,
                                "model_digest": info.model_digest,
                            },
                        }
                    ]
                },
            }
        ],
    }


def sign_c2pa(data: bytes, content_type: str, info: ProvenanceInfo, signer: C2paSigner) -> bytes:
    """Embed a signed C2PA manifest (``c2pa.created``) into the encoded image bytes."""
    try:
        import c2pa
    except ImportError:
        raise ProvenanceError(
            "C2PA signing is configured but c2pa-python is not installed"
        ) from None
    signer_info = c2pa.C2paSignerInfo(
        signer.alg.encode(),
        signer.cert_chain_pem,
        signer.private_key_pem,
        signer.tsa_url.encode() if signer.tsa_url else None,
    )
    try:
        with (
            c2pa.Signer.from_info(signer_info) as c2pa_signer,
            c2pa.Builder(json.dumps(c2pa_manifest(info, content_type))) as builder,
        ):
            dest = io.BytesIO()
            builder.sign(c2pa_signer, content_type, io.BytesIO(data), dest)
            return dest.getvalue()
    except c2pa.C2paError as exc:
        raise ProvenanceError(f"C2PA signing failed: {exc}") from None


def read_c2pa(
    data: bytes, content_type: str, trust_anchors_pem: str | None = None
) -> dict[str, Any] | None:
    """The C2PA manifest store of ``data`` plus its validation state, or None when absent.

    ``validation_state`` is "Invalid" (bad signature or hash), "Valid" (signature and hashes
    good, signer not in the trust list) or "Trusted" (also chains to ``trust_anchors_pem``).
    """
    try:
        import c2pa
    except ImportError:
        return None
    context = None
    if trust_anchors_pem:
        settings = {"trust": {"trust_anchors": trust_anchors_pem}, "verify": {"verify_trust": True}}
        context = c2pa.Context(c2pa.Settings.from_dict(settings))
    try:
        with c2pa.Reader(content_type, io.BytesIO(data), context=context) as reader:
            store = json.loads(reader.json())
            return {
                "validation_state": reader.get_validation_state(),
                "active_manifest": store.get("active_manifest"),
                "manifests": store.get("manifests", {}),
                "validation_results": store.get("validation_results"),
            }
    except c2pa.C2paError:
        return None
