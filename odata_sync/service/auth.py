"""Authentication: the ``x-cdata-authtoken`` header, HTTP Basic with a token or a password, and (only when enabled)
``@authtoken=`` in the URL. Verified credentials are cached briefly so the slow password hash runs rarely."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from urllib.parse import unquote_plus

import sqlalchemy as sa

from odata_sync.errors import Unauthorized
from odata_sync.odata.hooks import Principal
from odata_sync.service.passwords import token_hash, verify_password
from odata_sync.service.roles import parse_roles
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow

CACHE_SECONDS = 10.0
REALM = 'Basic realm="odata-sync"'


@dataclass
class _Cached:
    principal: Principal
    expires_token: dt.datetime | None
    until: float


class Authenticator:
    def __init__(self, store: Store, *, allow_url_token: bool = False) -> None:
        self.store = store
        self.allow_url_token = allow_url_token
        self._cache: dict[str, _Cached] = {}
        self.last_login: dict[str, dt.datetime] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    @staticmethod
    def _refuse(message: str) -> Unauthorized:
        return Unauthorized(message, headers={"WWW-Authenticate": REALM})

    def credentials(self, headers, raw_query: str) -> tuple[str | None, str | None]:
        """(user or None, secret) from the request, or (None, None)."""
        token = headers.get("x-cdata-authtoken")
        if token:
            return None, token.strip()
        authorization = headers.get("Authorization", "")
        if authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise self._refuse("Malformed Basic credentials") from exc
            user, sep, secret = decoded.partition(":")
            if not sep:
                raise self._refuse("Malformed Basic credentials")
            return user, secret
        if self.allow_url_token:
            for part in raw_query.split("&"):
                name, _, value = part.partition("=")
                if unquote_plus(name).lower() == "@authtoken" and value:
                    return None, unquote_plus(value)
        return None, None

    async def authenticate(self, headers, raw_query: str) -> Principal:
        user, secret = self.credentials(headers, raw_query)
        if not secret:
            raise self._refuse("Authentication required: send x-cdata-authtoken or HTTP Basic credentials")
        cache_key = hashlib.sha256(f"{user}\0{secret}".encode()).hexdigest()
        cached = self._cache.get(cache_key)
        now = utcnow()
        if cached and cached.until > time.monotonic():
            if cached.expires_token is not None and cached.expires_token <= now:
                raise self._refuse("The auth token has expired")
            self.last_login[cached.principal.name] = now
            return cached.principal
        users = self.store.table("Users")
        columns = (users.c.User, users.c.Roles, users.c.Active, users.c.UserId, users.c.Password,
                   users.c._TokenHash, users.c._TokenExpires)
        hashed = token_hash(secret)
        async with self.store.engine.connect() as conn:
            if user is None:
                row = (await conn.execute(sa.select(*columns).where(users.c._TokenHash == hashed))).first()
            else:
                row = (await conn.execute(sa.select(*columns).where(users.c.User == user))).first()
        if row is None:
            raise self._refuse("Invalid credentials")
        via_token = row._TokenHash == hashed
        if not via_token:
            ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, row.Password, secret)
            if not ok:
                raise self._refuse("Invalid credentials")
        if not row.Active:
            raise self._refuse(f"User '{row.User}' is not active")
        expires = row._TokenExpires if via_token else None
        if expires is not None and expires <= now:
            raise self._refuse("The auth token has expired")
        principal = Principal(row.User, frozenset(parse_roles(row.Roles)), row.UserId)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = _Cached(principal, expires, time.monotonic() + CACHE_SECONDS)
        self.last_login[principal.name] = now
        return principal
