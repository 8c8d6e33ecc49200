"""The governance services one server process shares: the personal-data detector and the
moderation classifiers (from plugins), the label signer (its key in the database) and the
retention scheduler."""

from __future__ import annotations

import asyncio
import time

import pluggy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from concierge.config import Settings
from concierge.governance import media, moderation
from concierge.governance import policy as policies
from concierge.governance.labels import Labeller, new_produce_id
from concierge.governance.moderation import Classifier, Verdict
from concierge.governance.pii import Detector, Recognizer
from concierge.governance.policy import Moderation, OrgPolicy, PolicyCache
from concierge.store import Database
from concierge.store.secrets import server_secret


class Governance:
    def __init__(self, db: Database, pm: pluggy.PluginManager, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        recognizers: list[Recognizer] = []
        pm.hook.register_pii_recognizers(register=recognizers.append, settings=settings)
        self.detector = Detector(recognizers)
        self.classifiers: list[Classifier] = []
        pm.hook.register_moderation_classifiers(register=self.classifiers.append, settings=settings)
        self.policies = PolicyCache()  # stored policies, validated once per content
        self._labeller: Labeller | None = None
        self._producers: dict[int, tuple[str, float]] = {}
        self.c2pa: media.C2paCredentials | None = None

    async def start(self) -> None:
        self._labeller, secret = await self.db.write(
            lambda conn: (
                Labeller.load(conn, self.settings.label_producer),
                server_secret(conn, media.C2PA_SECRET),
            )
        )
        self.c2pa = media.C2paCredentials.derive(secret, self.settings.label_producer)

    def keys(self) -> dict[str, Ed25519PublicKey]:
        return {self.labeller.kid: self.labeller.public}

    def label_image(
        self, data: bytes, producer: str, title: str = "image"
    ) -> tuple[bytes, dict[str, str]]:
        """``data`` (PNG or JPEG) with its implicit label in the metadata and, where
        c2pa-python is installed, a signed C2PA manifest."""
        made = self.labeller.label(
            media.pixel_digest_bytes(data), new_produce_id(), producer=producer
        )
        out = media.embed_label(data, made)
        if media.c2pa_available():
            assert self.c2pa is not None, "governance services are not started"
            out = media.c2pa_sign(out, self.c2pa, title, producer)
        return out, made

    @property
    def labeller(self) -> Labeller:
        if self._labeller is None:
            raise RuntimeError("governance services are not started")
        return self._labeller

    def producer(self, policy: OrgPolicy) -> str:
        return policy.labels.producer or self.settings.label_producer

    async def producer_for(self, org_id: int) -> str:
        """The organisation's ContentProducer, cached as briefly as API keys are."""
        now = time.monotonic()
        cached = self._producers.get(org_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        policy, _ = await self.db.read(lambda conn: policies.get(conn, org_id, self.policies))
        value = self.producer(policy)
        self._producers[org_id] = (value, now + self.settings.key_cache_seconds)
        return value

    def label(
        self, content: str, label_id: str | None, producer: str | None = None
    ) -> dict[str, str] | None:
        """The implicit label of stored generated text (None without a label id: no model
        wrote it)."""
        if not label_id:
            return None
        return self.labeller.label(content, label_id, producer=producer)

    def quick_check(self, text: str, policy: Moderation) -> Verdict:
        """Block lists and patterns only: cheap enough for every streamed piece."""
        return moderation.check(text, policy)

    async def check(self, text: str, policy: Moderation) -> Verdict:
        """Block lists, patterns and classifiers (off the event loop: a model may be slow)."""
        verdict = moderation.check(text, policy)
        if verdict.blocked or not self.classifiers or not policy.enabled:
            return verdict
        return await asyncio.to_thread(moderation.check, text, policy, self.classifiers)
