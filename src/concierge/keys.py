"""API keys: shown once when created, stored only as a SHA-256 hash, scoped, rate-limited.

A key looks like ``sk-cc-<43 url-safe characters>`` (256 random bits), so a fast hash is the
right store: there is nothing to brute-force. The first 12 characters are kept as a prefix to
tell keys apart in listings.

Scopes (``docs/api.md`` lists the routes of each); a key acts in its own organisation only,
except a ``platform`` key, which may name another (``OpenAI-Organization``):

    platform    the whole installation: organisations, keys anywhere, the retention job, the
    │           audit chain; and everything ``admin`` may, in any organisation
    └── admin   one organisation: its assistants, governance policy, keys, usage, audit
        │       entries, data subjects and legal holds; and everything below
        ├── inference   models, completions, embeddings; talking to assistants; end users'
        │               conversations, consents, memories and reports; reading knowledge
        ├── knowledge   creating, changing and deleting knowledge bases, files, vector stores
        └── inbox       the organisation's people: the human queue, replies, the review queue
    widget      nothing on the API: the key the public web widget is metered under
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from concierge import orgs
from concierge.errors import InvalidRequest, NotFound
from concierge.governance import audit
from concierge.store import aware, id_is, lock
from concierge.store.tables import api_keys

KEY_PREFIX = "sk-cc-"
SCOPES = frozenset({"platform", "admin", "inference", "knowledge", "inbox", "widget"})
# What each scope includes besides itself.
IMPLIES: dict[str, frozenset[str]] = {
    "platform": frozenset({"admin", "inference", "knowledge", "inbox"}),
    "admin": frozenset({"inference", "knowledge", "inbox"}),
}
DISPLAY_PREFIX_LENGTH = 12


def expand(scopes: frozenset[str]) -> frozenset[str]:
    """``scopes`` with everything they include."""
    out = set(scopes)
    for scope in scopes:
        out |= IMPLIES.get(scope, frozenset())
    return frozenset(out)


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value is not None and value < 1:
                raise InvalidRequest(f"{name} must be a positive number or left unset", param=name)


@dataclass(frozen=True)
class ApiKey:
    id: int
    org_id: int
    org_slug: str
    name: str
    prefix: str
    scopes: frozenset[str]
    limits: Limits
    created_at: datetime
    revoked_at: datetime | None

    @property
    def actor(self) -> str:
        """How the audit log names what this key did."""
        return f"key:{self.id}:{self.name}"

    def has_scope(self, scope: str) -> bool:
        return scope in expand(self.scopes)

    @property
    def is_platform(self) -> bool:
        return "platform" in self.scopes

    def may_grant(self, scopes: frozenset[str]) -> bool:
        """Whether this key may make a key with ``scopes``: an organisation's admin makes any
        key but a platform one; only a platform key makes those."""
        if self.is_platform:
            return True
        return "admin" in self.scopes and "platform" not in scopes

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org": self.org_slug,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": sorted(self.scopes),
            **self.limits.__dict__,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # shown once, never stored


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _row(row: Any) -> ApiKey:
    created = aware(row.created_at)
    return ApiKey(
        id=row.id,
        org_id=row.org_id,
        org_slug=row.slug,
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(row.scopes.split(",")),
        limits=Limits(
            row.requests_per_minute, row.tokens_per_minute, row.tokens_per_day, row.tokens_per_month
        ),
        created_at=created,
        revoked_at=aware(row.revoked_at),
    )


def _select() -> Any:
    return select(api_keys, orgs.slug_column(api_keys.c.org_id).label("slug"))


def parse_scopes(scopes: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    parsed = frozenset(s.strip() for s in items if s.strip())
    unknown = parsed - SCOPES
    if unknown or not parsed:
        raise InvalidRequest(
            f"scopes must be a non-empty subset of {', '.join(sorted(SCOPES))}"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""),
            param="scopes",
        )
    return parsed


def create(
    conn: Connection,
    org_slug: str,
    name: str,
    scopes: frozenset[str] = frozenset({"inference"}),
    limits: Limits | None = None,
    secret: str | None = None,
    *,
    actor: str = "system",
) -> NewKey:
    org = orgs.get(conn, org_slug)
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidRequest("a key name has 1-200 characters", param="name")
    limits = limits or Limits()
    secret = secret or generate_secret()
    now = datetime.now(UTC)
    result = conn.execute(
        insert(api_keys).values(
            org_id=org.id,
            name=name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            key_hash=hash_secret(secret),
            scopes=",".join(sorted(scopes)),
            created_at=now,
            **limits.__dict__,
        )
    )
    assert result.inserted_primary_key is not None
    key_id = int(result.inserted_primary_key[0])
    key = ApiKey(
        key_id, org.id, org.slug, name, secret[:DISPLAY_PREFIX_LENGTH], scopes, limits, now, None
    )
    audit.record(
        conn,
        "key.created",
        actor=actor,
        org_id=org.id,
        target=f"key:{key_id}",
        details={"name": name, "scopes": sorted(scopes), "prefix": key.prefix},
    )
    return NewKey(key, secret)


def find_active(conn: Connection, secret: str) -> ApiKey | None:
    """The unrevoked key with this secret, or None."""
    row = conn.execute(
        _select().where(api_keys.c.key_hash == hash_secret(secret), api_keys.c.revoked_at.is_(None))
    ).first()
    return _row(row) if row is not None else None


def get(conn: Connection, key_id: int) -> ApiKey:
    row = conn.execute(_select().where(id_is(api_keys.c.id, key_id))).first()
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    return _row(row)


def list_keys(conn: Connection, org_slug: str | None = None) -> list[ApiKey]:
    """Every key, or one organisation's (an unknown organisation is NotFound)."""
    query = _select().order_by(api_keys.c.id)
    if org_slug is not None:
        query = query.where(api_keys.c.org_id == orgs.get(conn, org_slug).id)
    return [_row(r) for r in conn.execute(query)]


def revoke(conn: Connection, key_id: int, *, actor: str = "system") -> ApiKey:
    key = get(conn, key_id)
    if key.revoked_at is None:
        conn.execute(
            update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=datetime.now(UTC))
        )
        audit.record(
            conn,
            "key.revoked",
            actor=actor,
            org_id=key.org_id,
            target=f"key:{key_id}",
            details={"name": key.name, "prefix": key.prefix},
        )
    return get(conn, key_id)


def bootstrap_admin(conn: Connection, configured_secret: str | None) -> NewKey | None:
    """Make sure an admin key exists; return it when it was created just now.

    ``configured_secret`` (CONCIERGE_ADMIN_KEY) is installed once if no key has that hash; a
    revoked one stays revoked. Without it, a key is generated only when there are no keys at
    all, and the caller prints it once.
    """
    org = orgs.ensure(conn, orgs.DEFAULT_ORG, "Default organisation")
    if configured_secret:
        exists = conn.execute(
            select(api_keys.c.id).where(api_keys.c.key_hash == hash_secret(configured_secret))
        ).first()
        if exists:
            return None
        return create(
            conn,
            org.slug,
            "admin (CONCIERGE_ADMIN_KEY)",
            frozenset({"platform"}),
            secret=configured_secret,
            actor="system:bootstrap",
        )
    count = conn.execute(select(func.count()).select_from(api_keys)).scalar_one()
    if count:
        return None
    return create(
        conn,
        org.slug,
        "admin (generated at first start)",
        frozenset({"platform"}),
        actor="system:bootstrap",
    )


WIDGET_KEY_NAME = "web widget"


def widget_key(conn: Connection, org_id: int) -> ApiKey:
    """The key an organisation's web-widget traffic is metered and rate-limited under.

    Made on first use with the ``widget`` scope and a secret nobody is shown (the widget is
    public; visitors are told apart by signed tokens). Its limits are set like any key's;
    revoking it switches the widget off for the organisation (a revoked key is returned, and
    the caller refuses).
    """
    lock(conn, "widget_key", org_id)  # two first visitors at once make one key, not two
    query = (
        _select()
        .where(api_keys.c.org_id == org_id, api_keys.c.name == WIDGET_KEY_NAME)
        .where(api_keys.c.scopes == "widget")
        .order_by(api_keys.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).first()
    if row is not None:
        return _row(row)
    slug = orgs.get_by_id(conn, org_id).slug
    return create(conn, slug, WIDGET_KEY_NAME, frozenset({"widget"}), actor="system:widget").key


def prefixes(conn: Connection, key_ids: Iterable[int]) -> dict[int, str]:
    """The shown prefix of each of these keys (to name them in a report)."""
    wanted = sorted({int(i) for i in key_ids})
    if not wanted:
        return {}
    rows = conn.execute(select(api_keys.c.id, api_keys.c.prefix).where(api_keys.c.id.in_(wanted)))
    return {int(row.id): str(row.prefix) for row in rows}
