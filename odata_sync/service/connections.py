"""Connections: provider and connection-string validation, encryption at rest, masking on read, referential rules."""

from __future__ import annotations

import sqlalchemy as sa

from odata_sync.connectors import connstr
from odata_sync.errors import BadRequest, Conflict
from odata_sync.odata.hooks import EntityHooks, Principal, WriteContext
from odata_sync.service import common
from odata_sync.service.roles import JOB_CREATOR
from odata_sync.service.secrets import SecretBox, SecretUnavailable

PROVIDERS = ("SQLite", "PostgreSQL", "MySQL", "DuckDB", "CSV", "OData")
ALIASES = {"mariadb": "MySQL", "postgres": "PostgreSQL"}


def canonical_provider(name: str) -> str:
    lowered = name.strip().lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    for provider in PROVIDERS:
        if provider.lower() == lowered:
            return provider
    raise BadRequest(f"ProviderName '{name}' is not supported; use one of {', '.join(PROVIDERS)}",
                     target="ProviderName")


class ConnectionHooks(EntityHooks):
    """ConnectionString is stored encrypted: the EDM marks it non-filterable and non-sortable."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def hidden(self, principal: Principal) -> frozenset[str]:
        only_creator = principal.has(JOB_CREATOR) and len(principal.roles) == 1
        return frozenset({"ConnectionString"}) if only_creator else frozenset()

    def present(self, principal: Principal, row: dict) -> None:
        """Mask the secrets. A string this server's key cannot decrypt reads as null: masking needs the plain text,
        the ciphertext means nothing to a client, and a listing must not fail for one bad row. The actions and
        writes on that connection say why (SecretUnavailable)."""
        if row.get("ConnectionString") is not None:
            try:
                row["ConnectionString"] = connstr.mask(self.box.decrypt(row["ConnectionString"]))
            except SecretUnavailable:
                row["ConnectionString"] = None

    def plain(self, stored: str | None) -> str | None:
        return self.box.decrypt(stored)

    async def before_create(self, tx: WriteContext, values: dict) -> None:
        common.unexpected_extras(tx)
        common.check_name(values["Name"], "Name")
        values["ProviderName"] = canonical_provider(values["ProviderName"])
        text = values.get("ConnectionString") or ""
        text = connstr.unmask(text, None)  # a masked secret with nothing stored behind it is refused
        connstr.validate(values["ProviderName"], text)
        values["ConnectionString"] = self.box.encrypt(text)
        values["ConnectionState"] = "Untested"
        common.stamp_create(tx, values)

    async def before_update(self, tx: WriteContext, old: dict, changes: dict) -> None:
        common.unexpected_extras(tx)
        await _refuse_if_used_by_running_job(tx, old["Name"])
        provider = canonical_provider(changes.get("ProviderName", old["ProviderName"]))
        if "ProviderName" in changes:
            changes["ProviderName"] = provider
        if "ConnectionString" in changes or "ProviderName" in changes:
            previous = self._previous(old["ConnectionString"], changes.get("ConnectionString"))
            text = changes.get("ConnectionString", previous) or ""
            text = connstr.unmask(text, previous)
            connstr.validate(provider, text)
            encrypted = self.box.encrypt(text)
            if text != previous or provider != old["ProviderName"]:
                changes["ConnectionState"] = "Untested"
                changes["LastTested"] = None
            changes["ConnectionString"] = encrypted
        common.stamp_update(tx, old, changes)

    def _previous(self, stored: str | None, new: str | None) -> str | None:
        """The stored plain text an update builds on. When it cannot be decrypted, a complete new connection string
        (no masked secret to keep) still replaces it: that is how a client recovers from a changed key."""
        try:
            return self.box.decrypt(stored)
        except SecretUnavailable:
            if new is None or connstr.MASK in new:
                raise
            return None

    async def before_delete(self, tx: WriteContext, old: dict) -> None:
        name = old["Name"]
        jobs, transformations = tx.tables("Jobs"), tx.tables("Transformations")
        job = (await tx.conn.execute(sa.select(jobs.c.JobName).where(
            sa.or_(jobs.c.Source == name, jobs.c.Destination == name)).limit(1))).scalar()
        if job is not None:
            raise Conflict(f"Connection '{name}' is used by job '{job}'; change or delete the job first")
        transformation = (await tx.conn.execute(sa.select(transformations.c.TransformationName).where(
            transformations.c.Connection == name).limit(1))).scalar()
        if transformation is not None:
            raise Conflict(f"Connection '{name}' is used by transformation '{transformation}'")


async def _refuse_if_used_by_running_job(tx: WriteContext, name: str) -> None:
    jobs = tx.tables("Jobs")
    running = (await tx.conn.execute(sa.select(jobs.c.JobName).where(
        sa.or_(jobs.c.Source == name, jobs.c.Destination == name), jobs.c.Status.in_(common.BUSY)).limit(1))).scalar()
    if running is not None:
        raise Conflict(f"Connection '{name}' is used by the running job '{running}'; it cannot be changed now")
