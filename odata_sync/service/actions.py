"""The actions this layer answers itself: user management. Job and connection actions live with their features."""

from __future__ import annotations

import sqlalchemy as sa

from odata_sync.errors import BadRequest, Conflict, Forbidden, NotFound
from odata_sync.odata.hooks import ActionCall, WriteContext
from odata_sync.service import common
from odata_sync.service.roles import ADMIN
from odata_sync.service.users import UserHooks, token_values
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow


class UserActions:
    def __init__(self, store: Store, hooks: UserHooks) -> None:
        self.store = store
        self.hooks = hooks

    def _tx(self, conn, call: ActionCall) -> WriteContext:
        return WriteContext(conn=conn, model=self.store.model, tables=self.store.table,
                            principal=call.context.principal, now=utcnow())

    async def create_users(self, call: ActionCall) -> list[dict]:
        if not call.context.principal.has(ADMIN):
            raise Forbidden("Only an administrator may create users")
        names = call.params.get("User") or []
        if not names:
            raise BadRequest("CreateUsers needs User#1 (and optionally Password#1, Roles#1, Active#1, FederationId#1)")

        def nth(name: str, index: int, default=None):
            values = call.params.get(name) or []  # aligned by number: User#2 and Password#2 share index 1
            return values[index] if index < len(values) and values[index] is not None else default

        users = self.store.table("Users")
        out = []
        async with self.store.write() as conn:
            tx = self._tx(conn, call)
            for index, name in enumerate(names):
                if name is None:
                    continue
                if not isinstance(name, str):
                    raise BadRequest(f"User#{index + 1} must be a string")
                if await common.exists(tx, "Users", "User", name):
                    raise Conflict(f"User '{name}' already exists")
                values = {"User": name, "Password": nth("Password", index), "Roles": nth("Roles", index,
                                                                                          "cdata_standard"),
                          "Active": nth("Active", index, True), "FederationId": nth("FederationId", index)}
                tx.response = {}
                await self.hooks.before_create(tx, values)
                await conn.execute(users.insert().values(**values))
                out.append({"User": name, "Roles": values["Roles"], "Active": values["Active"],
                            "AuthToken": tx.response["AuthToken"]})
        await self.hooks.after_commit()
        return out

    async def reset_auth_token(self, call: ActionCall) -> list[dict]:
        principal = call.context.principal
        name = call.params.get("User") or principal.name
        if name != principal.name and not principal.has(ADMIN):
            raise Forbidden("Only an administrator may reset another user's token")
        users = self.store.table("Users")
        async with self.store.write() as conn:
            tx = self._tx(conn, call)
            row = (await conn.execute(sa.select(users.c.ExpiredIn).where(users.c.User == name))).first()
            if row is None:
                raise NotFound(f"User '{name}' does not exist")
            token, private = token_values(tx, row.ExpiredIn)
            await conn.execute(sa.update(users).where(users.c.User == name).values(Modified=tx.now, **private))
        await self.hooks.after_commit()
        return [{"User": name, "AuthToken": token}]
