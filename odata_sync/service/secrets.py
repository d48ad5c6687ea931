"""Encryption of secrets at rest (connection strings) with Fernet; the key comes from the environment or a 0600 file."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "enc:v1:"


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
        except InvalidToken as exc:
            raise RuntimeError("A stored secret cannot be decrypted: the secret key changed") from exc
