"""Users: roles, hashed passwords, tokens shown once, and the last active admin protected."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from odata_sync.errors import BadRequest, Conflict, Forbidden
from odata_sync.odata.hooks import EntityHooks, Principal, WriteContext
from odata_sync.service import common
from odata_sync.service.passwords import hash_password, new_token, token_hash
from odata_sync.service.roles import ADMIN, ROLES, parse_roles

MIN_PASSWORD = 8


def normalise_roles(text: str) -> str:
    roles = parse_roles(text)
    if not roles:
        raise BadRequest("Roles must name at least one role", target="Roles")
    canonical = []
    for role in roles:
        match = next((r for r in ROLES if r == role.lower()), None)
        if match is None:
            raise BadRequest(f"Unknown role '{role}'; use {', '.join(ROLES)}", target="Roles")
        if match not in canonical:
            canonical.append(match)
    return ",".join(canonical)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"Password must have at least {MIN_PASSWORD} characters", target="Password")


def token_values(tx: WriteContext, expires_in_days: int | None) -> tuple[str, dict]:
    """A fresh token and the private columns that store it (hash, expiry)."""
    token = new_token()
    expires = tx.now + dt.timedelta(days=expires_in_days) if expires_in_days else None
    return token, {"_TokenHash": token_hash(token), "_TokenExpires": expires}


async def other_active_admins(tx: WriteContext, name: str) -> int:
    users = tx.tables("Users")
    rows = (await tx.conn.execute(sa.select(users.c.Roles).where(users.c.Active.is_(True), users.c.User != name)))
    return sum(1 for (roles,) in rows if ADMIN in parse_roles(roles))


class UserHooks(EntityHooks):
    def __init__(self, on_change) -> None:
        self.on_change = on_change

    def row_filter(self, principal: Principal, table: sa.Table):
        return None if principal.has(ADMIN) else table.c.User == principal.name

    def authorize_key(self, principal: Principal, key) -> None:
        if not principal.has(ADMIN) and key != principal.name:
            raise Forbidden("Only an administrator may read other users")

    async def before_create(self, tx: WriteContext, values: dict) -> None:
        common.unexpected_extras(tx)
        common.check_name(values["User"], "User")
        values["Roles"] = normalise_roles(values["Roles"])
        if values.get("Password") is not None:
            check_password(values["Password"])
            values["Password"] = hash_password(values["Password"])
        common.check_range(values, "ExpiredIn", 1)
        values["UserId"] = common.new_id()
        token, private = token_values(tx, values.get("ExpiredIn"))
        values.update(private)
        tx.response["AuthToken"] = token
        common.stamp_create(tx, values)

    async def before_update(self, tx: WriteContext, old: dict, changes: dict) -> None:
        common.unexpected_extras(tx)
        if "Roles" in changes:
            changes["Roles"] = normalise_roles(changes["Roles"])
        if changes.get("Password") is not None:
            check_password(changes["Password"])
            changes["Password"] = hash_password(changes["Password"])
        common.check_range(changes, "ExpiredIn", 1)
        if "ExpiredIn" in changes:
            days = changes["ExpiredIn"]
            changes["_TokenExpires"] = tx.now + dt.timedelta(days=days) if days else None
        was_admin = old["Active"] and ADMIN in parse_roles(old["Roles"])
        stays_admin = changes.get("Active", old["Active"]) and ADMIN in parse_roles(changes.get("Roles", old["Roles"]))
        if was_admin and not stays_admin and await other_active_admins(tx, old["User"]) == 0:
            raise Conflict("This is the last active administrator; it cannot be demoted or deactivated")
        common.stamp_update(tx, old, changes)

    async def before_delete(self, tx: WriteContext, old: dict) -> None:
        is_admin = old["Active"] and ADMIN in parse_roles(old["Roles"])
        if is_admin and await other_active_admins(tx, old["User"]) == 0:
            raise Conflict("This is the last active administrator; it cannot be deleted")

    async def after_commit(self) -> None:
        self.on_change()


class RequestHooks(EntityHooks):
    collection_delete = True
