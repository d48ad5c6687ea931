"""The two statements the engine needs that the connector interface does not offer (yet): delete the rows whose key
is missing from a key table, and widen a column's type. Both run through ``Connector.execute``; providers without
SQL (CSV) get None and the engine falls back."""

from __future__ import annotations

from collections.abc import Sequence

from odata_sync.connectors.sql import quote_ident

#: Destinations that run SQL statements (``Connector.execute``).
SQL_DESTINATIONS = frozenset({"PostgreSQL", "MySQL", "SQLite", "DuckDB"})


def quote(provider: str, name: str) -> str:
    return quote_ident(name, "`" if provider == "MySQL" else '"')


def qualified(provider: str, table: str, schema: str | None) -> str:
    return f"{quote(provider, schema)}.{quote(provider, table)}" if schema else quote(provider, table)


def delete_missing(provider: str, table: str, keys_table: str, schema: str | None, key: Sequence[str]) -> str | None:
    """``DELETE`` the rows of ``table`` whose key is not in ``keys_table`` (an anti-join, one statement)."""
    if provider not in SQL_DESTINATIONS:
        return None
    target, keys = qualified(provider, table, schema), qualified(provider, keys_table, schema)
    match = " AND ".join(f"_k.{quote(provider, k)} = _t.{quote(provider, k)}" for k in key)
    if provider == "MySQL":
        first = quote(provider, key[0])
        return f"DELETE _t FROM {target} AS _t LEFT JOIN {keys} AS _k ON {match} WHERE _k.{first} IS NULL"
    return f"DELETE FROM {target} AS _t WHERE NOT EXISTS (SELECT 1 FROM {keys} AS _k WHERE {match})"


def widen_column(provider: str, table: str, schema: str | None, column: str, ddl: str, nullable: bool) -> str | None:
    """``ALTER`` a column to the wider type ``ddl``; None where types need no widening (SQLite) or cannot be altered."""
    target, name = qualified(provider, table, schema), quote(provider, column)
    if provider in ("PostgreSQL", "DuckDB"):
        return f"ALTER TABLE {target} ALTER COLUMN {name} TYPE {ddl}"
    if provider == "MySQL":
        return f"ALTER TABLE {target} MODIFY COLUMN {name} {ddl}{'' if nullable else ' NOT NULL'}"
    return None  # SQLite does not enforce declared lengths or sizes; CSV has no types
