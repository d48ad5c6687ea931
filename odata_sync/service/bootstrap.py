"""First start: with no user in the store, create ``admin`` and say its token once."""

from __future__ import annotations

import sqlalchemy as sa

from odata_sync.service.common import new_id
from odata_sync.service.passwords import hash_password, new_token, token_hash
from odata_sync.service.roles import ADMIN
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow


async def ensure_admin(store: Store, *, token: str | None, password: str | None) -> str | None:
    """Return the new admin's token when one was created (None when users already exist)."""
    users = store.table("Users")
    async with store.write() as conn:
        if (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one():
            return None
        token = token or new_token()
        now = utcnow()
        await conn.execute(users.insert().values(
            User="admin", Roles=ADMIN, Active=True, UserId=new_id(), Created=now, Modified=now,
            Password=hash_password(password) if password else None, _TokenHash=token_hash(token)))
    return token
