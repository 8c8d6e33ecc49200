"""Labels inside images: AIGC metadata (PNG text chunk, XMP) and a C2PA manifest, written
without re-encoding, checked through the API and the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from concierge.governance import media


def picture(kind: str) -> bytes:
    image = Image.new("RGB", (48, 32), (30, 90, 200))
    for x in range(48):
        image.putpixel((x, x % 32), (250, 250, 0))
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
async def test_images_are_labelled_and_verified(
    kind: str,
    client: httpx.AsyncClient,
    cli,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    original = picture(kind)
    labelled = await client.post(
        "/v1/labels/images?title=banner", content=original, headers={"Content-Type": "image/png"}
    )
    assert labelled.status_code == 200, labelled.text
    assert labelled.headers["x-ai-generated"] == "1"
    data = labelled.content
    # The picture itself is untouched: same pixels, metadata added.
    assert Image.open(io.BytesIO(data)).tobytes() == Image.open(io.BytesIO(original)).tobytes()
    label = media.read_label(data)
    assert label is not None and label["Label"] == "1"
    assert label["ProduceID"] == labelled.headers["x-aigc-produce-id"]

    checked = (await client.post("/v1/labels/verify-file", content=data)).json()
    assert checked["ok"] is True, checked
    assert checked["c2pa"]["state"] == "Trusted"
    assert checked["c2pa"]["digital_source_types"] == [media.DIGITAL_SOURCE_TYPE]

    target = tmp_path / f"banner.{kind.lower()}"
    target.write_bytes(data)
    shown = cli("labels", "verify", str(target))
    assert "image: label valid" in shown.stdout and "C2PA manifest: Trusted" in shown.stdout

    # Paint one pixel: the AIGC signature and the C2PA hash both fail.
    edited = Image.open(io.BytesIO(data)).convert("RGB")
    edited.putpixel((0, 0), (0, 0, 0))
    buffer = io.BytesIO()
    edited.save(buffer, "PNG")
    repainted = media.embed_label(buffer.getvalue(), label)
    result = (await client.post("/v1/labels/verify-file", content=repainted)).json()
    assert result["ok"] is False and "signature does not match" in result["items"][0]["problems"][0]


async def test_bad_images_and_files_are_refused(client: httpx.AsyncClient, cli) -> None:  # type: ignore[no-untyped-def]
    refused = await client.post("/v1/labels/images", content=b"GIF89a not supported")
    assert refused.status_code == 400 and "PNG or JPEG" in refused.json()["error"]["message"]
    empty = await client.post("/v1/labels/verify-file", content=b"")
    assert empty.status_code == 400
    unlabelled = (await client.post("/v1/labels/verify-file", content=picture("PNG"))).json()
    assert unlabelled["ok"] is False and "no AIGC label" in unlabelled["items"][0]["problems"][0]
    garbage = await client.post("/v1/labels/verify-file", content=b"\x00\x01 not json")
    assert garbage.status_code == 400
    broken = cli("labels", "verify", "{not json", ok=False)
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr


def test_c2pa_credentials_are_the_same_on_every_replica() -> None:
    one = media.C2paCredentials.derive("a" * 64)
    two = media.C2paCredentials.derive("a" * 64)
    other = media.C2paCredentials.derive("b" * 64)
    assert one.chain_pem == two.chain_pem and one.key_pem == two.key_pem
    assert one.ca_pem != other.ca_pem


def test_anyone_can_verify_with_the_public_key_alone(cli) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from concierge.governance.labels import Labeller

    issuer = Labeller(Ed25519PrivateKey.generate(), "Acme Ltd")
    document = json.dumps({"content": "hello world", "aigc": issuer.label("hello world", "a-1")})
    key = issuer.public_jwk()["x"]
    assert "label valid" in cli("labels", "verify", document, "--public-key", key).stdout
    edited = cli(
        "labels", "verify", document.replace("hello", "jello"), "--public-key", key, ok=False
    )
    assert edited.returncode == 1
    wrong = cli("labels", "verify", document, "--public-key", "nonsense", ok=False)
    assert wrong.returncode == 2 and "not an Ed25519 public key" in wrong.stderr
