"""TestConnection, GetConnectionTables and GetConnectionTableColumns: the connection actions, over the connectors."""

from __future__ import annotations

import sqlalchemy as sa

from odata_sync.connectors import open_connector
from odata_sync.errors import BadRequest, ConnectionFailed, NotFound
from odata_sync.odata.hooks import ActionCall
from odata_sync.service.common import touch
from odata_sync.service.connections import ConnectionHooks
from odata_sync.service.secrets import SecretUnavailable
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow

DEFAULT_TIMEOUT = 30  # seconds; a CommandTimeout= (or Timeout=) key in the connection string overrides it
TABLE_KINDS = ("TABLES", "VIEWS", "ALL")


class ConnectionActions:
    def __init__(self, store: Store, hooks: ConnectionHooks) -> None:
        self.store = store
        self.hooks = hooks

    async def _stored(self, call: ActionCall) -> tuple[str, str, str | None]:
        """The named connection's provider and connection string as stored (still encrypted)."""
        name = call.params.get("ConnectionName")
        if not name:
            raise BadRequest("ConnectionName is required", target="ConnectionName")
        table = self.store.table("Connections")
        async with self.store.read() as session:
            rows = await session.fetch(sa.select(table.c.ProviderName, table.c.ConnectionString)
                                       .where(table.c.Name == name))
        if not rows:
            raise NotFound(f"Connection '{name}' does not exist")
        provider, stored = rows[0]
        return name, provider, stored

    async def _connection(self, call: ActionCall) -> tuple[str, str, str]:
        """Name, provider and plain connection string (SecretUnavailable, a 409, when the key cannot open it)."""
        name, provider, stored = await self._stored(call)
        return name, provider, self.hooks.plain(stored) or ""

    async def test_connection(self, call: ActionCall) -> list[dict]:
        """A failed test is an answer (200, Status Failed, the driver's message), not an error: the test ran. It
        records ConnectionState and LastTested either way."""
        name, provider, stored = await self._stored(call)
        status, message = "Success", "The connection succeeded"
        try:
            text = self.hooks.plain(stored) or ""
            async with open_connector(provider, text, timeout=DEFAULT_TIMEOUT) as connector:
                await connector.test()
        except (ConnectionFailed, BadRequest, SecretUnavailable) as exc:
            status, message = "Failed", exc.message
        table = self.store.table("Connections")
        now = utcnow()
        async with self.store.write() as conn:
            await touch(conn, table, table.c.Name == name, now, LastTested=now,
                        ConnectionState="Successful" if status == "Success" else "Failed")
        return [{"ConnectionName": name, "Status": status, "Message": message}]

    async def get_tables(self, call: ActionCall) -> list[dict]:
        name, provider, text = await self._connection(call)
        kind = (call.params.get("TableOrView") or "TABLES").upper()
        if kind not in TABLE_KINDS:
            raise BadRequest("TableOrView must be TABLES, VIEWS or ALL", target="TableOrView")
        top, skip = call.params.get("TopTable"), call.params.get("SkipTable") or 0
        if (top is not None and top < 0) or skip < 0:
            raise BadRequest("TopTable and SkipTable must not be negative")
        async with open_connector(provider, text, timeout=DEFAULT_TIMEOUT) as connector:
            tables = await connector.list_tables(kind, call.params.get("Schema"))
        tables = tables[skip:] if top is None else tables[skip:skip + top]
        include_schema = call.params.get("IncludeSchema", True)
        include_catalog = call.params.get("IncludeCatalog", False)
        return [{"TableName": t.name, "Schema": t.schema if include_schema is not False else None,
                 "Catalog": t.catalog if include_catalog else None, "TableType": t.type} for t in tables]

    async def get_columns(self, call: ActionCall) -> list[dict]:
        name, provider, text = await self._connection(call)
        table_name = call.params.get("Table")
        if not table_name:
            raise BadRequest("Table is required", target="Table")
        async with open_connector(provider, text, timeout=DEFAULT_TIMEOUT) as connector:
            columns = await connector.list_columns(table_name)
        return [{"ColumnName": c.name, "DataType": c.native_type, "IsNullable": c.nullable,
                 "MaxLength": c.max_length, "Precision": c.precision, "Scale": c.scale,
                 "IsPrimaryKey": c.primary_key, "Ordinal": c.ordinal} for c in columns]
