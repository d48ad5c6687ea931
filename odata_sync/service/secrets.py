"""Encryption of secrets at rest (connection strings) with Fernet; the key comes from the environment or a 0600 file."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from odata_sync.errors import Conflict

PREFIX = "enc:v1:"


class SecretUnavailable(Conflict):
    """A stored secret that this server's key cannot open: it was written under another key (a changed
    ``ODATA_SYNC_SECRET_KEY`` or a replaced key file). A 409, not a 500: the stored row, not the request, is at odds
    with the server's configuration, and the client can resolve it by writing the connection string again."""

    code = "SecretUnavailable"


def load_key(data_dir: Path, configured: str | None) -> bytes:
    """``ODATA_SYNC_SECRET_KEY`` (any string; hashed into a Fernet key) or ``<data-dir>/secret.key`` created once."""
    if configured:
        try:
            Fernet(configured.encode())
            return configured.encode()
        except (ValueError, TypeError):
            return base64.urlsafe_b64encode(hashlib.sha256(configured.encode()).digest())
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self.key = key

    def encrypt(self, text: str | None) -> str | None:
        if text is None:
            return None
        return PREFIX + self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        if stored is None or not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretUnavailable(
                "The stored connection string cannot be decrypted with this server's secret key (was "
                "ODATA_SYNC_SECRET_KEY or the key file changed?); restore that key or write the connection string "
                "again in full") from None
