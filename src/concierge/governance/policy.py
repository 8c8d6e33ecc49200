"""Governance policy: one document per organisation, with per-assistant overrides.

Every part is on by default; an organisation changes its policy with the admin API
(``PUT /api/orgs/{org}/policy``) or ``concierge policy set``. Each change is versioned and
written to the audit log with what changed; turning AI disclosure off is recorded as its own
action (``disclosure.disabled``), since it needs a reason to exist (EU AI Act Art. 50(1) allows
it only where being an AI is obvious from the context).

An assistant may narrow or adjust a few settings for itself (``governance`` in its definition):
its own disclosure texts, explicit label and PII handling. It can never switch disclosure or
moderation off; only the organisation can.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from sqlalchemy import Connection, insert, select, update

from concierge import regex
from concierge.errors import InvalidRequest, PreconditionFailed
from concierge.governance import audit
from concierge.store import aware, lock
from concierge.store.tables import org_policies

Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35)]
EntityType = Literal["email", "phone", "card", "iban", "ip", "national_id"]
ENTITY_TYPES: tuple[EntityType, ...] = ("email", "phone", "card", "iban", "ip", "national_id")
Purpose = Literal["terms", "personalization", "marketing"]
PURPOSES: tuple[Purpose, ...] = ("terms", "personalization", "marketing")

DISCLOSURE_TEXTS: dict[str, str] = {
    "en": "You are chatting with an AI assistant. Answers are generated automatically and "
    "may contain mistakes; you can ask for a person at any time.",
    "fr": "Vous échangez avec un assistant d'intelligence artificielle. Les réponses sont "
    "générées automatiquement et peuvent contenir des erreurs ; vous pouvez demander à parler "
    "à une personne à tout moment.",
    "de": "Sie chatten mit einem KI-Assistenten. Die Antworten werden automatisch erzeugt und "
    "können Fehler enthalten; Sie können jederzeit nach einem Menschen fragen.",
    "es": "Está conversando con un asistente de inteligencia artificial. Las respuestas se "
    "generan automáticamente y pueden contener errores; puede pedir hablar con una persona en "
    "cualquier momento.",
    "it": "Stai parlando con un assistente di intelligenza artificiale. Le risposte sono "
    "generate automaticamente e possono contenere errori; puoi chiedere di parlare con una "
    "persona in qualsiasi momento.",
    "pt": "Está a conversar com um assistente de inteligência artificial. As respostas são "
    "geradas automaticamente e podem conter erros; pode pedir para falar com uma pessoa a "
    "qualquer momento.",
    "nl": "U chat met een AI-assistent. Antwoorden worden automatisch gegenereerd en kunnen "
    "fouten bevatten; u kunt op elk moment naar een medewerker vragen.",
    "zh": "您正在与人工智能助手对话。回答由人工智能自动生成，可能存在错误；"
    "您可以随时要求转接人工客服。",
    "ja": "AIアシスタントとチャットしています。回答は自動生成されており、誤りを含む場合があります。"
    "いつでも担当者に代わるよう依頼できます。",
}

EXPLICIT_LABEL_TEXTS: dict[str, str] = {
    "en": "[AI-generated content]",
    "fr": "[Contenu généré par IA]",
    "de": "[KI-generierter Inhalt]",
    "es": "[Contenido generado por IA]",
    "it": "[Contenuto generato da IA]",
    "pt": "[Conteúdo gerado por IA]",
    "nl": "[Door AI gegenereerde inhoud]",
    "zh": "【本内容由人工智能生成】",
    "ja": "［AI生成コンテンツ］",
}

MEMORY_CONSENT_TEXTS: dict[str, str] = {
    "en": "May the assistant remember what you tell it (such as your name and preferences) "
    "for later conversations? You can change your answer at any time.",
    "fr": "L'assistant peut-il retenir ce que vous lui dites (par exemple votre nom et vos "
    "préférences) pour vos prochaines conversations ? Vous pouvez changer d'avis à tout moment.",
    "de": "Darf sich der Assistent merken, was Sie ihm sagen (etwa Ihren Namen und Ihre "
    "Vorlieben), für spätere Gespräche? Sie können Ihre Antwort jederzeit ändern.",
    "es": "¿Puede el asistente recordar lo que le cuenta (como su nombre y sus preferencias) "
    "para próximas conversaciones? Puede cambiar su respuesta en cualquier momento.",
    "it": "L'assistente può ricordare ciò che gli dici (come il tuo nome e le tue preferenze) "
    "per le prossime conversazioni? Puoi cambiare la tua risposta in qualsiasi momento.",
    "pt": "O assistente pode lembrar-se do que lhe diz (como o seu nome e preferências) em "
    "conversas futuras? Pode mudar a sua resposta a qualquer momento.",
    "nl": "Mag de assistent onthouden wat u vertelt (zoals uw naam en voorkeuren) voor "
    "volgende gesprekken? U kunt uw antwoord altijd wijzigen.",
    "zh": "是否允许助手记住您告诉它的信息（如您的姓名和偏好），以便在以后的对话中使用？"
    "您可以随时更改此选择。",
    "ja": "今後の会話のために、お伝えいただいた内容（お名前やご希望など）をアシスタントが"
    "記憶してもよろしいですか？この選択はいつでも変更できます。",
}

REFUSAL_TEXT = (
    "Sorry, I can't help with that here. If you think this is a mistake, you can ask for a person."
)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _texts(value: dict[str, str]) -> dict[str, str]:
    out = {}
    for language, text in value.items():
        text = text.strip()
        if not text:
            raise ValueError(f"the text for '{language}' is empty")
        if len(text) > 2000:
            raise ValueError(f"the text for '{language}' is longer than 2000 characters")
        out[language.lower()] = text
    return out


class Disclosure(_Part):
    """EU AI Act Art. 50(1): people are told they are interacting with an AI system."""

    enabled: bool = True
    default_language: Language = "en"
    texts: dict[Language, str] = Field(default_factory=lambda: dict(DISCLOSURE_TEXTS))

    _check = field_validator("texts")(_texts)

    def text_for(self, accept_language: str | None) -> str | None:
        """The notice in the reader's language (from an Accept-Language value), None where
        disclosure is switched off. Every place that shows the notice asks here."""
        if not self.enabled:
            return None
        return pick_language(self.texts, accept_language, self.default_language)


class Labels(_Part):
    """EU AI Act Art. 50(2); GB 45438-2025: implicit (metadata) and explicit (visible) labels."""

    producer: Annotated[str, Field(max_length=200)] = Field(
        "", description="ContentProducer in implicit labels; default the server's label_producer."
    )
    explicit: Literal["none", "start", "end"] = Field(
        "none", description="Where a visible label goes in generated text."
    )
    explicit_texts: dict[Language, str] = Field(default_factory=lambda: dict(EXPLICIT_LABEL_TEXTS))

    _check = field_validator("explicit_texts")(_texts)


class Pii(_Part):
    """What is done with personal data found in messages (detection is always on in logs)."""

    redact_storage: bool = Field(True, description="Store messages with personal data masked.")
    redact_external_models: bool = Field(
        True, description="Mask personal data before it is sent to a model outside this server."
    )
    entities: list[EntityType] = Field(default_factory=lambda: list(ENTITY_TYPES))


def _pattern(value: str) -> str:
    """A moderation pattern: run by RE2 (linear time whatever the input), so one message cannot
    freeze the server with a pattern like ``(a+)+$``."""
    try:
        return regex.check(value)
    except regex.PatternError as exc:
        raise ValueError(str(exc)) from None


class Moderation(_Part):
    """Generative AI Interim Measures Art. 14-15: unlawful content is stopped and reviewed."""

    enabled: bool = True
    check_input: bool = True
    check_output: bool = True
    blocked_terms: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=5000, description="Matched as whole words, any case."
    )
    blocked_patterns: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=500, description="Regular expressions, any case."
    )
    action: Literal["refuse", "flag"] = Field(
        "refuse", description="refuse: answer with refusal_text; flag: deliver, queue for review."
    )
    refusal_text: Annotated[str, Field(min_length=1, max_length=2000)] = REFUSAL_TEXT
    classifier_threshold: float = Field(0.8, gt=0, le=1)

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.context and info.context.get("stored"):
            return value  # checked when set; one RE2 cannot run is skipped (and logged)
        return [_pattern(v) for v in value]


class Consent(_Part):
    """Processing that needs the end user's agreement, and the texts they agree to."""

    memory_requires: Purpose | None = Field(
        "personalization",
        description="The consent purpose the assistant's memory of a user needs (None: none).",
    )
    text_versions: dict[Purpose, Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: {p: "1" for p in PURPOSES},
        description="The current version of each consent text.",
    )
    memory_texts: dict[Language, str] = Field(
        default_factory=lambda: dict(MEMORY_CONSENT_TEXTS),
        description="What the web widget asks before the assistant may remember a visitor, per "
        "language; a decision records text_versions[memory_requires] (raise it when you edit).",
    )

    _check = field_validator("memory_texts")(_texts)


class Retention(_Part):
    """GDPR Art. 5(1)(e): data kept no longer than needed."""

    conversation_days: int | None = Field(
        365, ge=1, le=36500, description="Conversations idle this long are deleted (None: kept)."
    )
    event_days: int | None = Field(
        None, ge=1, le=36500, description="Usage and behaviour events older than this go."
    )


class Injection(_Part):
    """Prompt-injection defence (see concierge.governance.injection)."""

    enabled: bool = Field(True, description="All of the layers below; off: plain delimiters.")
    datamarking: bool = Field(True, description="Mark whitespace inside untrusted text.")
    tool_guard: bool = Field(True, description="Refuse tool calls that only a document asked for.")
    leak_guard: bool = Field(True, description="Withhold answers that repeat the instructions.")


class OrgPolicy(_Part):
    disclosure: Disclosure = Field(default_factory=Disclosure)
    labels: Labels = Field(default_factory=Labels)
    pii: Pii = Field(default_factory=Pii)
    moderation: Moderation = Field(default_factory=Moderation)
    consent: Consent = Field(default_factory=Consent)
    retention: Retention = Field(default_factory=Retention)
    injection: Injection = Field(default_factory=Injection)


class AssistantGovernance(_Part):
    """An assistant's own adjustments to its organisation's policy."""

    disclosure_texts: dict[Language, str] | None = None
    explicit_label: Literal["none", "start", "end"] | None = None
    pii_redact_storage: bool | None = None
    pii_redact_external_models: bool | None = None
    blocked_terms: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000, description="Added to the organisation's list."
    )

    @field_validator("disclosure_texts")
    @classmethod
    def _texts(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _texts(value)


def effective(policy: OrgPolicy, own: AssistantGovernance | None) -> OrgPolicy:
    """The organisation's policy with an assistant's adjustments applied."""
    if own is None:
        return policy
    disclosure = policy.disclosure
    if own.disclosure_texts:
        disclosure = disclosure.model_copy(
            update={"texts": {**disclosure.texts, **own.disclosure_texts}}
        )
    labels = policy.labels
    if own.explicit_label is not None:
        labels = labels.model_copy(update={"explicit": own.explicit_label})
    pii = policy.pii
    updates: dict[str, Any] = {}
    if own.pii_redact_storage is not None:
        updates["redact_storage"] = own.pii_redact_storage
    if own.pii_redact_external_models is not None:
        updates["redact_external_models"] = own.pii_redact_external_models
    if updates:
        pii = pii.model_copy(update=updates)
    moderation = policy.moderation
    if own.blocked_terms:
        moderation = moderation.model_copy(
            update={"blocked_terms": [*moderation.blocked_terms, *own.blocked_terms]}
        )
    return policy.model_copy(
        update={"disclosure": disclosure, "labels": labels, "pii": pii, "moderation": moderation}
    )


def pick_language(texts: dict[str, str], wanted: str | None, default: str) -> str:
    """The text for ``wanted`` (an Accept-Language value or a tag), its base language, or the
    default language's, or any."""
    for tag in _tags(wanted):
        if tag in texts:
            return texts[tag]
        base = tag.split("-")[0]
        if base in texts:
            return texts[base]
    if default in texts:
        return texts[default]
    return next(iter(texts.values()), "")


def _tags(header: str | None) -> list[str]:
    """Language tags from an Accept-Language header, most wanted first."""
    if not header:
        return []
    weighted = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        tag = tag.strip().lower()
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


# -- storage ---------------------------------------------------------------------------------


def parse(data: Any) -> OrgPolicy:
    """A policy from JSON, with errors in the API's shape."""
    if not isinstance(data, dict):
        raise InvalidRequest("the policy must be a JSON object", param="policy")
    try:
        return OrgPolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"invalid policy: {where}: {first['msg']}", param=where) from None


_DEFAULT = OrgPolicy()


class PolicyCache:
    """Stored policies validated once per distinct content, for one server (policies are
    immutable values, so a cached one is never stale: a change is new content)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._parsed: dict[bytes, OrgPolicy] = {}

    def parse(self, stored: Any) -> OrgPolicy:
        key = orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)
        policy = self._parsed.get(key)
        if policy is None:
            policy = _stored(stored)
            if len(self._parsed) >= self.size:
                self._parsed.clear()
            self._parsed[key] = policy
        return policy


def _stored(stored: Any) -> OrgPolicy:
    return OrgPolicy.model_validate(stored, context={"stored": True})


def get(conn: Connection, org_id: int, cache: PolicyCache | None = None) -> tuple[OrgPolicy, int]:
    """The organisation's policy and its version (0: never changed, the defaults). Read on
    every turn: a server passes its :class:`PolicyCache` so each content is validated once."""
    row = conn.execute(
        select(org_policies.c.policy, org_policies.c.version).where(org_policies.c.org_id == org_id)
    ).first()
    if row is None:
        return _DEFAULT, 0
    policy = cache.parse(row.policy) if cache is not None else _stored(row.policy)
    return policy, int(row.version)


def describe(conn: Connection, org_id: int) -> dict[str, Any]:
    row = conn.execute(select(org_policies).where(org_policies.c.org_id == org_id)).first()
    policy, version = get(conn, org_id)
    return {
        "object": "governance.policy",
        "version": version,
        "updated_at": aware(row.updated_at).isoformat() if row else None,
        "updated_by": row.updated_by if row else None,
        **policy.model_dump(),
    }


def _changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(old) | set(new)):
        where = f"{path}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_changes(a, b, where + "."))
        elif a != b:
            out[where] = {"from": a, "to": b}
    return out


def _locked(conn: Connection, org_id: int, expected: int | None) -> tuple[OrgPolicy, int]:
    """The policy as it stands, with every other writer of this organisation's policy held
    off until this transaction ends (two replicas patching at once both take effect, one
    after the other); ``expected`` (a client's If-Match) must be its version."""
    lock(conn, "org_policy", org_id)
    current, version = get(conn, org_id)
    if expected is not None and expected != version:
        raise PreconditionFailed(
            f"the policy is at version {version}, not {expected}: it changed since you read "
            "it; read it again and repeat your change",
            param="If-Match",
        )
    return current, version


def put(
    conn: Connection,
    org_id: int,
    policy: OrgPolicy,
    *,
    actor: str,
    expected_version: int | None = None,
) -> int:
    """Replace the organisation's policy; audited. Returns the new version."""
    old, version = _locked(conn, org_id, expected_version)
    changes = _changes(old.model_dump(), policy.model_dump())
    if not changes:
        return version
    now = datetime.now(UTC)
    values = {"policy": policy.model_dump(), "updated_at": now, "updated_by": actor[:200]}
    if version == 0:
        conn.execute(insert(org_policies).values(org_id=org_id, version=1, **values))
    else:
        conn.execute(
            update(org_policies)
            .where(org_policies.c.org_id == org_id)
            .values(version=version + 1, **values)
        )
    audit.record(
        conn,
        "policy.updated",
        actor=actor,
        org_id=org_id,
        target=f"org:{org_id}",
        details={"version": version + 1, "changes": changes},
    )
    if old.disclosure.enabled != policy.disclosure.enabled:
        audit.record(
            conn,
            "disclosure.enabled" if policy.disclosure.enabled else "disclosure.disabled",
            actor=actor,
            org_id=org_id,
            target=f"org:{org_id}",
        )
    return version + 1


def patch(
    conn: Connection,
    org_id: int,
    changes: Any,
    *,
    actor: str,
    expected_version: int | None = None,
) -> int:
    """Merge ``changes`` (a partial policy, nested objects merged) into the current policy,
    as it stands once this transaction holds it."""
    if not isinstance(changes, dict):
        raise InvalidRequest("the policy must be a JSON object", param="policy")
    current, version = _locked(conn, org_id, expected_version)
    merged = _merge(current.model_dump(), changes)
    return put(conn, org_id, parse(merged), actor=actor, expected_version=version)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _WHOLE:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# Maps replaced whole by a patch (a language list is the operator's, not merged with ours).
_WHOLE = frozenset({"texts", "explicit_texts", "text_versions"})
