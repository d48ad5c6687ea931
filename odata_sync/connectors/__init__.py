"""Connectors: one module per provider behind one async interface (``base.Connector``).

``open_connector("PostgreSQL", "Server=...;Database=...;User=...;Password=...")`` validates the connection string at
once (BadRequest naming a bad key) and returns an unopened connector; ``async with`` (or any method) connects.

    async with open_connector("SQLite", "Database=/data/src.db") as source, \
               open_connector("PostgreSQL", dest_connstr) as dest:
        columns, batches = await source.read("orders", 10_000, where=[("updated_at", ">=", mark)])
        warnings = await dest.create_table("orders", columns, [c.name for c in columns if c.primary_key])
        async for batch in batches:
            async with dest.transaction():          # a batch and its checkpoint commit together
                await dest.upsert_batch("orders", [c.name for c in columns], batch, key=["id"])
                await dest.upsert_batch("_sync_state", ["task", "mark"], [(task, new_mark)], key=["task"])

Every driver failure surfaces as ``ConnectionFailed`` (message scrubbed of secrets) or ``BadRequest``; every call is
bounded by the timeout (``CommandTimeout``). One connector serves one task at a time.
"""

from __future__ import annotations

import importlib

from .base import BatchReader, ColumnInfo, Connector, TableInfo, WriteCounts
from .connstr import MASK, SECRET_KEYS, ConnectionString, is_secret_key, mask, parse, provider_name, unmask, validate
from .sql import Condition
from .types import CanonicalType, NativeType, TypeWarning, map_columns, to_canonical, to_native

#: Display name -> module and class; the display name is what ``provider`` reports.
PROVIDERS: dict[str, tuple[str, str]] = {
    "SQLite": ("sqlite", "SQLiteConnector"),
    "PostgreSQL": ("postgresql", "PostgreSQLConnector"),
    "MySQL": ("mysql", "MySQLConnector"),
    "DuckDB": ("duckdb", "DuckDBConnector"),
    "CSV": ("csvfolder", "CSVConnector"),
    "OData": ("odata", "ODataConnector"),
}

def connector_class(name: str) -> type[Connector]:
    module_name, class_name = PROVIDERS[provider_name(name)]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def open_connector(provider: str, connection_string: str, timeout: float | None = 30) -> Connector:
    """A connector for ``provider`` (validated now, connected on first use). ``timeout`` bounds each driver call,
    connecting included; a ``Timeout=`` key in the connection string overrides it."""
    canonical = provider_name(provider)
    parsed = parse(connection_string)
    settings = validate(canonical, parsed)
    return connector_class(canonical)(settings, timeout=timeout, secrets=parsed.secrets())


from_connection_string = open_connector

__all__ = [
    "MASK", "PROVIDERS", "SECRET_KEYS", "BatchReader", "CanonicalType", "ColumnInfo", "Condition", "ConnectionString",
    "Connector", "NativeType", "TableInfo", "TypeWarning", "WriteCounts", "connector_class", "from_connection_string",
    "is_secret_key", "map_columns", "mask", "open_connector", "parse", "provider_name", "to_canonical", "to_native",
    "unmask", "validate",
]
