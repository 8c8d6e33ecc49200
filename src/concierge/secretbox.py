"""Secrets at rest: what an organisation gives the server to act for it (a channel's access
token, app secret, bot token) is stored encrypted, never in the clear.

Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under the installation's key. The
key is the setting ``secret_keys`` (comma-separated Fernet keys: the first encrypts, every one
decrypts, so a key is rotated by putting the new one first and running
``concierge channels reencrypt``); without it, a key file made once under the data directory
(readable by its owner only). Replicas of one deployment must share the key: set
``CONCIERGE_SECRET_KEYS`` for them all. A database copied without the key yields no secret.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_FILE = "secret.key"


class SecretUnreadable(Exception):
    """A stored secret that no configured key opens (the key was changed or lost)."""


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("a secret box needs at least one key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def from_settings(cls, secret_keys: str | None, data_dir: Path) -> SecretBox:
        if secret_keys:
            return cls([k.strip().encode() for k in secret_keys.split(",") if k.strip()])
        return cls([key_file(data_dir)])

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret cannot be decrypted with the configured secret_keys"
            ) from None

    def rotate(self, sealed: str) -> str:
        """``sealed`` encrypted again under the first key."""
        return self._fernet.rotate(sealed.encode()).decode()


def key_file(data_dir: Path) -> bytes:
    """The installation's key file, made (mode 0600) on first use. Written whole under a
    temporary name, then linked into place: a process starting beside this one reads either
    no file or the whole key, never half of it, and the first link wins."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=".secret-")
        try:
            with os.fdopen(fd, "wb") as out:  # mkstemp makes it 0600
                out.write(Fernet.generate_key() + b"\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_bytes().strip()
