"""DuckDB: source and destination through the duckdb module on a dedicated thread.

Reads stream from a separate cursor with ``fetchmany`` (DuckDB streams query results, so memory stays bounded).
Writes insert a whole batch in one statement, one list parameter per column (``INSERT ... SELECT UNNEST(?::T[])``):
columnar and far faster than ``executemany`` row by row, with no pandas or pyarrow dependency.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from odata_sync.errors import BadRequest, ConnectionFailed, ODataSyncError

from . import values
from .base import BatchReader, ColumnInfo, Connector, TableInfo, pick_columns
from .sql import brackets_to_quotes, build_select, column_definitions, quote_ident
from .threads import ConnectionThread, ThreadedTableOps
from .types import CanonicalType, TypeWarning, duckdb_to_canonical

_stage_ids = itertools.count(1)
_REQUEST_ERRORS = (duckdb.CatalogException, duckdb.ParserException, duckdb.BinderException)
_TEXT_NATIVE = ("VARCHAR", "CHAR", "BPCHAR", "TEXT", "STRING")


def _q(name: str) -> str:
    return quote_ident(name, '"')


def _select_expr(column: ColumnInfo) -> str:
    """How a column is selected so that the Python value is canonical (and no pytz is needed)."""
    native, kind, name = column.native_type.upper(), column.canonical.kind, _q(column.name)
    if kind == "timestamptz":
        return f"timezone('UTC', {name})"
    if kind == "json" and native != "JSON":
        return f"CAST(to_json({name}) AS VARCHAR)"
    if kind in ("text", "string") and not native.startswith(_TEXT_NATIVE):
        return f"CAST({name} AS VARCHAR)"
    return name


def _encoder(ctype: CanonicalType) -> values.Converter | None:
    if ctype.kind == "decimal":  # as text: exact beyond 38 digits, and binding strings is faster than Decimals
        return lambda v: format(v, "f")
    return None


class _Reader:
    def __init__(self, connector: DuckDBConnector, cursor: Any, converters: list) -> None:
        self._connector, self._cursor, self._converters = connector, cursor, converters

    def _fetch(self, size: int) -> list[tuple]:
        return values.convert_rows(self._cursor.fetchmany(size), self._converters)

    async def fetch(self, size: int) -> list[tuple]:
        return await self._connector._run(self._fetch, size)

    async def close(self) -> None:
        cursor, self._cursor = self._cursor, None
        self._connector._cursors.discard(cursor)
        await self._connector._run(cursor.close)


class DuckDBConnector(ThreadedTableOps, Connector):
    _quote = staticmethod(_q)
    _distinct = "{} IS DISTINCT FROM {}"
    provider = "DuckDB"
    driver_errors = (duckdb.Error,)

    def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        database = str(settings["Database"])
        self.memory = database == ":memory:"
        self.path = Path(database).expanduser()
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._thread: ConnectionThread | None = None
        self._cursors: set[Any] = set()
        self.default_schema = "main"

    # --- plumbing ---------------------------------------------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._thread is None:
            self._thread = ConnectionThread("odsync-duckdb")
            self._thread.interrupt = self._interrupt
        return await self._thread.run(fn, *args)

    def _interrupt(self) -> None:
        for connection in [self._conn, *self._cursors]:
            if connection is not None:
                connection.interrupt()

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            raise ConnectionFailed(f"DuckDB database file '{self.path}' does not exist")
        return self._conn

    def _connect(self, create: bool) -> duckdb.DuckDBPyConnection:
        if self.memory:
            return duckdb.connect(":memory:")
        if not create and not self.path.exists():
            raise ConnectionFailed(f"DuckDB database file '{self.path}' does not exist")
        if create and not self.path.parent.is_dir():
            raise ConnectionFailed(f"the folder of DuckDB database file '{self.path}' does not exist")
        return duckdb.connect(str(self.path))

    def _failure(self, exc: BaseException) -> ODataSyncError | None:
        if isinstance(exc, duckdb.Error):
            message = self._scrub(f"DuckDB: {' '.join(str(exc).split()) or type(exc).__name__}")
            return BadRequest(message) if isinstance(exc, _REQUEST_ERRORS) else ConnectionFailed(message)
        return super()._failure(exc)

    def _target(self, table: str, schema: str | None) -> str:
        return f"{_q(schema or self.default_schema)}.{_q(table)}"

    def _count(self, sql: str) -> int:
        return self._one(sql)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(sql, list(params)).fetchone()
        return row[0] if row else None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.conn.execute(sql, list(params)).fetchall()

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def _open(self, *, create_missing: bool = False) -> None:
        if not create_missing and not self.memory and not self.path.exists():
            return  # a destination creates it on first write; a source fails on first use
        await self._connected(create_missing)

    async def _connected(self, create: bool) -> None:
        self._conn = await self._run(self._connect, create)
        self.default_schema = await self._run(self._one, "SELECT current_schema()") or "main"

    async def _ensure_created(self) -> None:
        if self._conn is None:
            await self._connected(True)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        cursors, self._cursors = list(self._cursors), set()
        if conn is not None:
            def close() -> None:
                for cursor in cursors:
                    cursor.close()
                conn.close()
            await self._run(close)
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None

    async def _ping(self) -> None:
        await self._run(self._one, "SELECT count(*) FROM information_schema.tables")

    # --- metadata ---------------------------------------------------------------------------------------------------

    async def _list_tables(self, kind: str, schema: str | None) -> list[TableInfo]:
        types = {"TABLES": ["BASE TABLE"], "VIEWS": ["VIEW"], "ALL": ["BASE TABLE", "VIEW"]}[kind]
        rows = await self._run(self._all, (
            "SELECT table_name, table_schema, table_catalog, table_type FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_type IN (SELECT unnest(?::VARCHAR[])) "
            "AND (? IS NULL OR table_schema = ?)"), (types, schema, schema))
        return [TableInfo(name, db_schema, catalog, "VIEW" if kind_ == "VIEW" else "TABLE")
                for name, db_schema, catalog, kind_ in rows]

    async def _list_columns(self, table: str, schema: str | None) -> list[ColumnInfo]:
        schema = schema or self.default_schema

        def describe() -> tuple[list[tuple], list[str]]:
            rows = self._all(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
                "ORDER BY ordinal_position", (schema, table))
            keys = self._all(
                "SELECT constraint_column_names FROM duckdb_constraints() WHERE database_name = current_database() "
                "AND schema_name = ? AND table_name = ? AND constraint_type = 'PRIMARY KEY'", (schema, table))
            return rows, [name for (names,) in keys for name in names]
        rows, key = await self._run(describe)
        columns = []
        for name, native, nullable in rows:
            ctype = duckdb_to_canonical(native)
            columns.append(ColumnInfo(name=name, native_type=native, canonical=ctype, nullable=nullable == "YES",
                                      max_length=ctype.length, precision=ctype.precision, scale=ctype.scale,
                                      primary_key=name in key, ordinal=len(columns) + 1))
        return columns

    async def _estimate_rows(self, table: str, schema: str | None) -> int | None:
        return int(await self._run(self._one, f"SELECT count(*) FROM {self._target(table, schema)}"))

    # --- reading ----------------------------------------------------------------------------------------------------

    async def _start_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                          where: list, order_by: list[str], batch_size: int) -> tuple[list[ColumnInfo], BatchReader]:
        if table is not None:
            schema, name = table
            available = await self._read_columns(name, schema, columns)
            from_sql = self._target(name, schema)
        else:
            query = brackets_to_quotes(query or "", '"')
            described = await self._run(self._all, f"DESCRIBE {query}")
            available = [ColumnInfo.of(name, duckdb_to_canonical(native), native_type=native, ordinal=i + 1)
                         for i, (name, native, *_rest) in enumerate(described)]
            if columns:
                available = pick_columns(available, columns)
            from_sql = f"({query}) AS _q"
        types = {c.name: c.canonical for c in available}

        def encode(column: str, value: Any) -> Any:
            converter = values.compose(values.coercer(types[column]), _encoder(types[column])) \
                if column in types else None
            return converter(value) if converter else value

        plain = all(_select_expr(c) == _q(c.name) for c in available)
        if query is not None and plain and not (columns or where or order_by):
            sql, params = query, []  # as written: wrapping could make duplicate column names ambiguous
        else:
            select_list = [f"{_select_expr(c)} AS {_q(c.name)}" for c in available]
            sql, params = build_select("", None, where, order_by, quote=_q, from_sql=from_sql,
                                       placeholder=lambda i: "?", encode=encode, select_list=select_list)

        def start() -> Any:
            cursor = self.conn.cursor()
            self._cursors.add(cursor)
            try:
                cursor.execute(sql, params)
            except BaseException:
                self._cursors.discard(cursor)
                cursor.close()
                raise
            return cursor
        cursor = await self._run(start)
        converters = [values.compose(values.coercer(c.canonical)) for c in available]
        return available, _Reader(self, cursor, converters)

    # --- writing ----------------------------------------------------------------------------------------------------

    async def _create_table(self, table: str, columns: list[ColumnInfo], primary_key: list[str],
                            schema: str | None) -> list[TypeWarning]:
        parts, warnings = column_definitions(self.provider, columns, primary_key, _q)

        def create() -> None:
            if schema:
                self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
            self.conn.execute(f"CREATE TABLE {self._target(table, schema)} ({', '.join(parts)})")
        await self._run(create)
        return warnings

    def _insert(self, target: str, columns: list[ColumnInfo], rows: Sequence[Sequence[Any]]) -> None:
        converters = [values.compose(values.coercer(c.canonical), _encoder(c.canonical)) for c in columns]
        encoded = values.convert_rows(rows, converters)
        lists = [list(column) for column in zip(*encoded, strict=True)]
        names = ", ".join(_q(c.name) for c in columns)
        unnests = ", ".join(f"UNNEST(?::VARCHAR[])::{c.native_type}" if c.canonical.kind == "decimal"
                            else f"UNNEST(?::{c.native_type or 'VARCHAR'}[])" for c in columns)
        self.conn.execute(f"INSERT INTO {target} ({names}) SELECT {unnests}", lists)

    async def _write_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                           rows: Sequence[Sequence[Any]]) -> None:
        await self._run(self._insert, self._target(table, schema), columns, rows)

    def _stage(self, table: str, schema: str | None, columns: list[ColumnInfo], rows: Sequence[Sequence[Any]]) -> str:
        stage = _q(f"_odsync_stage_{next(_stage_ids)}")
        names = ", ".join(_q(c.name) for c in columns)
        self.conn.execute(f"CREATE TEMP TABLE {stage} AS SELECT {names} FROM {self._target(table, schema)} LIMIT 0")
        self._insert(f"temp.{stage}", columns, rows)
        return f"temp.{stage}"

    async def _execute(self, sql: str, params: list[Any]) -> int:
        def run() -> int:
            result = self.conn.execute(sql, params)
            try:
                row = result.fetchone() if result.description and result.description[0][0] == "Count" else None
            except duckdb.Error:
                row = None
            return int(row[0]) if row and isinstance(row[0], int) else 0
        return await self._run(run)

    # --- transactions -----------------------------------------------------------------------------------------------

    async def _begin(self) -> None:
        await self._run(self.conn.execute, "BEGIN TRANSACTION")

    async def _commit(self) -> None:
        await self._run(self.conn.execute, "COMMIT")

    async def _rollback(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.execute, "ROLLBACK")
