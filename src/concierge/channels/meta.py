"""What Meta's platforms (WhatsApp Cloud API, Messenger, Instagram) share: the Graph API's
address and bearer token, the ``hub.*`` subscription handshake, and ``X-Hub-Signature-256``,
an HMAC-SHA256 of the raw body under the app secret, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from concierge.channels.base import ChannelConfig, ChannelType
from concierge.errors import InvalidRequest, PermissionDenied, SignatureInvalid

GRAPH = "https://graph.facebook.com"


class MetaConfig(ChannelConfig):
    SECRETS: ClassVar[frozenset[str]] = frozenset({"access_token", "app_secret", "verify_token"})

    access_token: str = Field(min_length=1, max_length=1024)
    app_secret: str = Field(min_length=1, max_length=256)
    verify_token: str = Field(min_length=1, max_length=256)
    api_version: str = Field("v23.0", pattern=r"^v\d{1,3}\.\d{1,2}$")


def hmac_sha256(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_meta_signature(app_secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body under the app secret>``,
    compared in constant time (Meta's webhooks: WhatsApp, Messenger, Instagram)."""
    given = headers.get("x-hub-signature-256", "")
    if not given.startswith("sha256="):
        raise SignatureInvalid("the webhook has no X-Hub-Signature-256 signature")
    if not hmac.compare_digest(given[7:].lower(), hmac_sha256(app_secret, body)):
        raise SignatureInvalid("the webhook's X-Hub-Signature-256 signature does not match")


def verify_meta_subscription(verify_token: str, query: Mapping[str, str]) -> str:
    """Meta's subscription handshake: ``hub.mode=subscribe`` with the configured
    ``hub.verify_token`` is answered with ``hub.challenge``."""
    if query.get("hub.mode") != "subscribe":
        raise InvalidRequest("hub.mode must be 'subscribe'", param="hub.mode")
    given = query.get("hub.verify_token", "")
    if not hmac.compare_digest(given.encode(), verify_token.encode()):
        raise PermissionDenied("hub.verify_token does not match the channel's verify_token")
    challenge = query.get("hub.challenge", "")
    if not challenge or len(challenge) > 256:
        raise InvalidRequest("hub.challenge is missing", param="hub.challenge")
    return challenge


class MetaPlatform(ChannelType):
    """A channel on one of Meta's platforms (its config a :class:`MetaConfig`)."""

    def _meta(self, config: ChannelConfig) -> MetaConfig:
        assert isinstance(config, MetaConfig)
        return config

    def _base(self, config: ChannelConfig) -> str:
        meta = self._meta(config)
        return f"{(meta.api_base_url or GRAPH).rstrip('/')}/{meta.api_version}"

    def _auth(self, config: ChannelConfig) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._meta(config).access_token}"}

    def verify(self, config: ChannelConfig, query: Mapping[str, str]) -> str:
        return verify_meta_subscription(self._meta(config).verify_token, query)

    def authenticate(self, config: ChannelConfig, headers: Mapping[str, str], body: bytes) -> None:
        check_meta_signature(self._meta(config).app_secret, headers, body)
