"""Organisations and API keys at the storage level; the admin key bootstrap."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from concierge import keys, orgs
from concierge.errors import Conflict, InvalidRequest, NotFound
from concierge.store import Database


def test_keys_are_stored_hashed_and_shown_once(db: Database) -> None:
    db.write_sync(lambda c: orgs.create(c, "acme", "Acme"))
    new = db.write_sync(lambda c: keys.create(c, "acme", "web app"))
    assert new.secret.startswith("sk-cc-") and len(new.secret) > 40
    stored = db.read_sync(lambda c: c.execute(text("SELECT * FROM api_keys")).mappings().all())
    assert new.secret not in str(stored)
    assert stored[0]["key_hash"] == keys.hash_secret(new.secret)
    found = db.read_sync(lambda c: keys.find_active(c, new.secret))
    assert found is not None and found.org_slug == "acme" and found.scopes == {"inference"}
    db.write_sync(lambda c: keys.revoke(c, new.key.id))
    assert db.read_sync(lambda c: keys.find_active(c, new.secret)) is None


def test_validation(db: Database) -> None:
    db.write_sync(lambda c: orgs.create(c, "acme"))
    with pytest.raises(Conflict):
        db.write_sync(lambda c: orgs.create(c, "acme"))
    for slug in ("", "UPPER", "-dash", "sp ace", "x" * 65):
        with pytest.raises(InvalidRequest):
            db.write_sync(lambda c, s=slug: orgs.create(c, s))
    with pytest.raises(NotFound):
        db.write_sync(lambda c: keys.create(c, "ghost", "k"))
    with pytest.raises(InvalidRequest):
        keys.parse_scopes("inference,root")
    with pytest.raises(InvalidRequest):
        keys.Limits(requests_per_minute=0)
    with pytest.raises(NotFound):
        db.write_sync(lambda c: keys.revoke(c, 999))


def test_bootstrap_generates_one_admin_key_once(db: Database) -> None:
    first = db.write_sync(lambda c: keys.bootstrap_admin(c, None))
    assert first is not None and first.key.scopes == {"platform"}
    assert db.write_sync(lambda c: keys.bootstrap_admin(c, None)) is None  # printed only once


def test_bootstrap_from_configured_key(db: Database) -> None:
    secret = "sk-cc-from-the-environment-123456"
    created = db.write_sync(lambda c: keys.bootstrap_admin(c, secret))
    assert created is not None and created.secret == secret
    assert db.write_sync(lambda c: keys.bootstrap_admin(c, secret)) is None  # idempotent
    db.write_sync(lambda c: keys.revoke(c, created.key.id))
    assert db.write_sync(lambda c: keys.bootstrap_admin(c, secret)) is None  # stays revoked
    assert db.read_sync(lambda c: keys.find_active(c, secret)) is None
