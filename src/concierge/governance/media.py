"""Provenance labels inside image files (GB 45438-2025 metadata labels; C2PA).

:func:`label_image` writes the implicit label into a PNG or JPEG *without re-encoding it*:

- PNG: an ``iTXt`` chunk with keyword ``AIGC`` holding the label's JSON, and an XMP packet
  (``iTXt`` ``XML:com.adobe.xmp``) with the same JSON as ``TC260:AIGC``;
- JPEG: the XMP packet as an APP1 segment.

The label's signature covers the decoded pixels (mode, size and bytes), so it survives any
change of metadata and fails on any change of the picture.

Where ``c2pa-python`` is installed (``pip install 'concierge[c2pa]'``), the file also gets a
C2PA manifest: action ``c2pa.created`` with digital source type ``trainedAlgorithmicMedia``,
signed with an Ed25519 certificate issued by a local certificate authority. Both keys are
derived from an installation secret in the database, so every replica signs with the same
certificate chain; :func:`c2pa_anchor` is the CA certificate to trust when checking.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass
from html import escape, unescape
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from concierge import regex
from concierge.errors import InvalidRequest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
C2PA_SECRET = "c2pa_signing_key"  # noqa: S105 (the secret's name)
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_XMP_PROPERTY = regex.compile(r'TC260:AIGC="([^"]*)"')
_XMP_PACKET = regex.compile(
    rb"http://ns\.adobe\.com/xap/1\.0/\x00(.*?)<\?xpacket end", dot_all=True
)


def image_format(data: bytes) -> str:
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    raise InvalidRequest("not a PNG or JPEG image")


def pixel_digest_bytes(data: bytes) -> bytes:
    """What an image label covers: mode, size and decoded pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            head = f"{image.mode}:{image.width}x{image.height}:".encode()
            return head + hashlib.sha256(image.tobytes()).digest()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(f"the image cannot be read: {exc}") from None


def _xmp(label: dict[str, str]) -> bytes:
    value = escape(json.dumps(label, ensure_ascii=False, separators=(",", ":")), quote=True)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:TC260="{XMP_NS}" TC260:AIGC="{value}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _itxt(keyword: str, text: bytes) -> bytes:
    # keyword, NUL, compression flag 0, method 0, no language tag, no translated keyword
    return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes, int, int]]:
    """(type, body, start, end) of every chunk."""
    out = []
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            raise InvalidRequest("the PNG file is truncated")
        out.append((kind, data[position + 8 : position + 8 + length], position, end))
        position = end
        if kind == b"IEND":
            break
    return out


def _jpeg_insert_app1(data: bytes, payload: bytes) -> bytes:
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    position = 2
    # After SOI and any APP0 (JFIF) segment, where readers look for XMP.
    while data[position : position + 2] == b"\xff\xe0":
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        position += 2 + length
    return data[:position] + segment + data[position:]


def embed_label(data: bytes, label: dict[str, str]) -> bytes:
    """``data`` with the label in its metadata (any earlier AIGC label replaced)."""
    kind = image_format(data)
    xmp = _xmp(label)
    if kind == "png":
        chunks = _png_chunks(data)
        kept = [
            data[start:end]
            for chunk_kind, body, start, end in chunks
            if not (
                chunk_kind == b"iTXt"
                and (body.startswith(b"AIGC\x00") or body.startswith(b"XML:com.adobe.xmp\x00"))
            )
        ]
        text = json.dumps(label, ensure_ascii=False, separators=(",", ":")).encode()
        new = [_itxt("AIGC", text), _itxt("XML:com.adobe.xmp", xmp)]
        return PNG_SIGNATURE + kept[0] + b"".join(new) + b"".join(kept[1:])
    if len(xmp) + len(XMP_JPEG_HEADER) > 65000:
        raise InvalidRequest("the label is too large for a JPEG XMP segment")
    return _jpeg_insert_app1(data, XMP_JPEG_HEADER + xmp)


def read_label(data: bytes) -> dict[str, Any] | None:
    """The AIGC label in an image's metadata, if there is one."""
    kind = image_format(data)
    if kind == "png":
        for chunk_kind, body, _, _ in _png_chunks(data):
            if chunk_kind == b"iTXt" and body.startswith(b"AIGC\x00"):
                # keyword, compression flag and method, language tag, translated keyword, text
                rest = body[len(b"AIGC\x00") :]
                compressed, parts = rest[:1] == b"\x01", rest[2:].split(b"\x00", 2)
                if len(parts) != 3:
                    raise InvalidRequest("the image's AIGC metadata is malformed")
                text = zlib.decompress(parts[2]) if compressed else parts[2]
                return _json_label(text.decode("utf-8", "replace"))
        return None
    found = _XMP_PACKET.search(data)
    if found is None:
        return None
    match = _XMP_PROPERTY.search(found.group(1).decode("utf-8", "replace"))
    if match is None:
        return None
    return _json_label(unescape(match.group(1)))


def _json_label(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidRequest("the image's AIGC metadata is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the image's AIGC metadata is not a JSON object")
    return value


# -- C2PA ------------------------------------------------------------------------------------

_VALID_FROM = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_VALID_TO = dt.datetime(2036, 1, 1, tzinfo=dt.UTC)


@dataclass
class C2paCredentials:
    """A local CA and a content-signing certificate it issued, from one installation secret."""

    ca_pem: bytes
    chain_pem: bytes
    key_pem: bytes
    issuer: str = "Concierge"

    @classmethod
    def derive(cls, secret: str, organization: str = "Concierge") -> C2paCredentials:
        def key(purpose: str) -> Ed25519PrivateKey:
            seed = hashlib.sha256(f"{purpose}:{secret}".encode()).digest()
            return Ed25519PrivateKey.from_private_bytes(seed)

        def serial(purpose: str) -> int:
            return int.from_bytes(
                hashlib.sha256(f"serial:{purpose}:{secret}".encode()).digest()[:16]
            )

        ca_key, signer_key = key("c2pa-ca"), key("c2pa-signer")
        ca_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} content credentials CA"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            ]
        )
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(serial("ca"))
            .not_valid_before(_VALID_FROM)
            .not_valid_after(_VALID_TO)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, None)
        )
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} content signer"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            ]
        )
        leaf = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(ca_name)
            .public_key(signer_key.public_key())
            .serial_number(serial("signer"))
            .not_valid_before(_VALID_FROM)
            .not_valid_after(_VALID_TO)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, None)
        )
        pem = serialization.Encoding.PEM
        return cls(
            ca_pem=ca.public_bytes(pem),
            chain_pem=leaf.public_bytes(pem) + ca.public_bytes(pem),
            key_pem=signer_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            issuer=organization,
        )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def c2pa_available() -> bool:
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


def c2pa_sign(data: bytes, credentials: C2paCredentials, title: str, producer: str) -> bytes:
    """``data`` with a signed C2PA manifest saying it was made by a trained model."""
    import c2pa

    kind = "image/png" if image_format(data) == "png" else "image/jpeg"
    manifest = {
        "claim_generator_info": [{"name": "Concierge"}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE,
                            "softwareAgent": {"name": producer},
                        }
                    ]
                },
            }
        ],
    }
    info = c2pa.C2paSignerInfo(
        c2pa.C2paSigningAlg.ED25519, credentials.chain_pem, credentials.key_pem, None
    )
    signer = c2pa.Signer.from_info(info)
    try:
        with c2pa.Builder(json.dumps(manifest)) as builder:
            out = io.BytesIO()
            builder.sign(signer, kind, io.BytesIO(data), out)
            return out.getvalue()
    finally:
        signer.close()


def c2pa_read(data: bytes, anchor_pem: bytes | None) -> dict[str, Any] | None:
    """The active C2PA manifest's source type and validation state (None: no manifest)."""
    import c2pa

    kind = "image/png" if image_format(data) == "png" else "image/jpeg"
    context = None
    if anchor_pem is not None:
        settings = c2pa.Settings.from_dict(
            {"trust": {"user_anchors": anchor_pem.decode()}, "verify": {"verify_trust": True}}
        )
        context = c2pa.Context(settings)
    try:
        reader = c2pa.Reader(kind, io.BytesIO(data), context=context)
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "not found" in str(exc).lower():
            return None
        return {"state": "Invalid", "problems": [str(exc)]}
    report = json.loads(reader.json())
    active = report.get("manifests", {}).get(report.get("active_manifest", ""), {})
    sources = [
        action.get("digitalSourceType")
        for assertion in active.get("assertions", [])
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for action in assertion.get("data", {}).get("actions", [])
    ]
    return {
        "state": report.get("validation_state"),
        "digital_source_types": [s for s in sources if s],
        "problems": [
            s.get("explanation") or s.get("code") for s in report.get("validation_status") or []
        ],
        "issuer": active.get("signature_info", {}).get("issuer"),
    }
