"""Provenance metadata: XMP read back by exiv2 (pyexiv2), C2PA signed and validated."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass

import pyexiv2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from pipeline.gate import provenance as pv
from pipeline.types import ProvenanceInfo

INFO = ProvenanceInfo(
    shot_id=4242,
    model_id="stabilityai/sdxl-base",
    model_digest="ab" * 32,
    loras=[{"name": "acme-style", "sha256": "cd" * 32, "weight": 0.8}],
    brand="acme",
    sku='MUG-<1>&"2"',  # catalog text is untrusted: must be escaped, not break the packet
    template="hero_white",
)


@dataclass(frozen=True)
class SigningChain:
    cert_chain_pem: bytes  # leaf then root
    key_pem: bytes
    root_pem: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shotline tests"),
        ]
    )


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_test_chain() -> SigningChain:
    """A local root CA and an ES256 end-entity signing cert with the extensions C2PA requires
    (not a CA, digitalSignature, an allowed EKU, SKI/AKI). C2PA refuses self-signed leaves."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("shotline test root"))
        .issuer_name(_name("shotline test root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("shotline test signer"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return SigningChain(
        cert_chain_pem=leaf.public_bytes(pem) + root.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        root_pem=root.public_bytes(pem),
    )


@pytest.fixture(scope="module")
def chain() -> SigningChain:
    return make_test_chain()


def image() -> Image.Image:
    return Image.new("RGB", (96, 64), (250, 250, 250))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_xmp_is_readable_by_exiv2(fmt: str) -> None:
    data = pv.encode_image(image(), fmt, pv.build_xmp(INFO, extra={"Watermark": "dwtDctSvd-y-x1"}))
    with Image.open(io.BytesIO(data)) as im:
        assert im.format.lower() == fmt
    meta = pyexiv2.ImageData(data)
    try:
        xmp = meta.read_xmp()
    finally:
        meta.close()
    assert xmp["Xmp.iptcExt.DigitalSourceType"] == pv.TRAINED_ALGORITHMIC_MEDIA
    assert xmp["Xmp.shotline.ShotId"] == "4242"
    assert xmp["Xmp.shotline.ModelDigest"] == "ab" * 32
    assert xmp["Xmp.shotline.Sku"] == 'MUG-<1>&"2"'
    assert xmp["Xmp.shotline.Loras"] == ["acme-style@" + "cd" * 32]
    assert xmp["Xmp.shotline.Watermark"] == "dwtDctSvd-y-x1"
    # Our own reader agrees with exiv2.
    ours = pv.read_xmp(data)
    assert ours["Iptc4xmpExt:DigitalSourceType"] == pv.TRAINED_ALGORITHMIC_MEDIA
    assert ours["shotline:ShotId"] == "4242"
    assert ours["shotline:Loras"] == ["acme-style@" + "cd" * 32]


def test_jpeg_is_written_444() -> None:
    data = pv.encode_image(image(), "jpeg")
    with Image.open(io.BytesIO(data)) as im:
        from PIL import JpegImagePlugin

        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4


def test_read_xmp_without_metadata_and_hostile_packets() -> None:
    assert pv.read_xmp(pv.encode_image(image(), "png")) == {}
    assert pv.read_xmp(b"not an image") == {}
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/"/>'
    assert pv.parse_xmp(bomb) == {}
    assert pv.parse_xmp(b"<x:xmpmeta>unclosed") == {}


def test_unsupported_format_is_refused() -> None:
    with pytest.raises(pv.ProvenanceError):
        pv.encode_image(image(), "gif")
    assert pv.normalize_format("JPG") == "jpeg"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_c2pa_manifest_validates(fmt: str, chain: SigningChain) -> None:
    content_type = pv.FORMATS[fmt][0]
    data = pv.encode_image(image(), fmt, pv.build_xmp(INFO))
    signer = pv.C2paSigner(chain.cert_chain_pem, chain.key_pem, pv.signing_alg(chain.key_pem))
    assert signer.alg == "es256"
    signed = pv.sign_c2pa(data, content_type, INFO, signer)

    # With our test root as trust anchor the credential is fully trusted...
    store = pv.read_c2pa(signed, content_type, trust_anchors_pem=chain.root_pem.decode())
    assert store is not None and store["validation_state"] == "Trusted"
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    created = actions["data"]["actions"][0]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == pv.TRAINED_ALGORITHMIC_MEDIA
    assert created["parameters"]["shot_id"] == 4242

    # ...without it the signature and hashes still validate, but the signer is untrusted:
    # c2pa reports "Valid" with exactly one failure, signingCredential.untrusted.
    plain = pv.read_c2pa(signed, content_type)
    assert plain is not None and plain["validation_state"] == "Valid"
    failures = plain["validation_results"]["activeManifest"].get("failure", [])
    assert [f["code"] for f in failures] == ["signingCredential.untrusted"]

    # The XMP written before signing is still there and still readable.
    assert pv.read_xmp(signed)["shotline:ShotId"] == "4242"


def test_c2pa_detects_tampering(chain: SigningChain) -> None:
    data = pv.encode_image(image(), "png", pv.build_xmp(INFO))
    signer = pv.C2paSigner(chain.cert_chain_pem, chain.key_pem, "es256")
    signed = bytearray(pv.sign_c2pa(data, "image/png", INFO, signer))
    i = signed.find(b"IDAT") + 20
    signed[i] ^= 0xFF
    store = pv.read_c2pa(bytes(signed), "image/png", chain.root_pem.decode())
    assert store is not None and store["validation_state"] == "Invalid"


def test_unsigned_file_has_no_manifest() -> None:
    assert pv.read_c2pa(pv.encode_image(image(), "png"), "image/png") is None


def test_signer_from_files_and_bad_key(tmp_path, chain: SigningChain) -> None:  # type: ignore[no-untyped-def]
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(chain.cert_chain_pem)
    key.write_bytes(chain.key_pem)
    assert pv.C2paSigner.from_files(cert, key).alg == "es256"
    key.write_bytes(b"garbage")
    with pytest.raises(pv.ProvenanceError):
        pv.C2paSigner.from_files(cert, key)
    with pytest.raises(pv.ProvenanceError):
        pv.C2paSigner.from_files(tmp_path / "missing.pem", key)


def test_manifest_is_json_serialisable() -> None:
    json.dumps(pv.c2pa_manifest(INFO, "image/png"))
