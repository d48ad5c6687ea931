"""SQLite: source and destination, through the standard sqlite3 module on a dedicated thread.

SQLite is dynamically typed, so the declared column type decides the canonical type and values are converted on the
way in and out: decimals as exact text (``DECIMAL_TEXT``), timestamps as ISO-8601 text (time-zone values in UTC),
booleans as 0/1. Writes are ``executemany`` inside one transaction.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from odata_sync.errors import BadRequest, ConnectionFailed, ODataSyncError

from . import values
from .base import BatchReader, ColumnInfo, Connector, TableInfo, pick_columns
from .sql import build_select, column_definitions, quote_ident
from .threads import ConnectionThread, ThreadedTableOps
from .types import CanonicalType, TypeWarning, sqlite_to_canonical

_stage_ids = itertools.count(1)
_REQUEST_ERRORS = ("no such table", "no such column", "syntax error", "already exists", "no such view",
                   "ambiguous column", "has no column", "incomplete input", "unrecognized token")


def _q(name: str) -> str:
    return quote_ident(name, '"')


def _encoder(ctype: CanonicalType, *, for_compare: bool = False) -> values.Converter | None:
    """Canonical value -> what SQLite stores for ``ctype`` (None: store as is)."""
    kind = ctype.kind
    if kind == "decimal":
        return lambda v: format(v, "f")
    if kind == "boolean":
        return int
    if kind in ("date", "time"):
        return lambda v: v.isoformat()
    if kind == "uuid":
        return str
    if kind == "timestamp":
        if for_compare:
            return lambda v: v.isoformat(sep=" ")
        return lambda v: v.isoformat(sep=" ", timespec="microseconds")
    if kind == "timestamptz":
        if for_compare:
            return lambda v: v.astimezone(values.UTC).isoformat(sep=" ")
        return lambda v: v.astimezone(values.UTC).isoformat(sep=" ", timespec="microseconds")
    return None


def encoders(columns: Sequence[ColumnInfo]) -> list[values.Converter | None]:
    return [values.compose(values.coercer(c.canonical), _encoder(c.canonical)) for c in columns]


def _infer(value: Any) -> CanonicalType:
    """The type of an expression column without a declared type, from its first value's storage class."""
    if isinstance(value, int):
        return CanonicalType("int64")
    if isinstance(value, float):
        return CanonicalType("float64")
    if isinstance(value, bytes):
        return CanonicalType("binary")
    return CanonicalType("text")


class _Reader:
    def __init__(self, connector: SQLiteConnector, cursor: sqlite3.Cursor, converters: list,
                 first: list[tuple] | None) -> None:
        self._connector, self._cursor, self._converters, self._first = connector, cursor, converters, first

    def _fetch(self, size: int) -> list[tuple]:
        if self._first is not None:
            rows, self._first = self._first, None
        else:
            rows = self._cursor.fetchmany(size)
        return values.convert_rows(rows, self._converters)

    async def fetch(self, size: int) -> list[tuple]:
        return await self._connector._run(self._fetch, size)

    async def close(self) -> None:
        await self._connector._run(self._cursor.close)


class SQLiteConnector(ThreadedTableOps, Connector):
    _quote = staticmethod(_q)
    _distinct = "{} IS NOT {}"
    _rowid_delete = True  # walk the staged batch, find target rows by key: a batch costs its size, not the table's
    provider = "SQLite"
    driver_errors = (sqlite3.Error,)

    def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        database = str(settings["Database"])
        self.memory = database == ":memory:"
        self.path = Path(database.removeprefix("file:")).expanduser()
        self._conn: sqlite3.Connection | None = None
        self._thread: ConnectionThread | None = None

    # --- plumbing ---------------------------------------------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._thread is None:
            self._thread = ConnectionThread("odsync-sqlite")
        return await self._thread.run(fn, *args)

    def _connect(self, create: bool) -> sqlite3.Connection:
        if self.memory:
            target, uri = ":memory:", False
        else:
            if not create and not self.path.exists():
                raise ConnectionFailed(f"SQLite database file '{self.path}' does not exist")
            if create and not self.path.parent.is_dir():
                raise ConnectionFailed(f"the folder of SQLite database file '{self.path}' does not exist")
            target = self.path.resolve().as_uri() + ("?mode=rwc" if create else "?mode=rw")
            uri = True
        conn = sqlite3.connect(target, uri=uri, timeout=self.timeout or 30, isolation_level=None,
                               check_same_thread=False)
        assert self._thread is not None
        self._thread.interrupt = conn.interrupt
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConnectionFailed(f"SQLite database file '{self.path}' does not exist")
        return self._conn

    def _failure(self, exc: BaseException) -> ODataSyncError | None:
        if isinstance(exc, sqlite3.Error):
            message = self._scrub(" ".join(str(exc).split()) or type(exc).__name__)
            if isinstance(exc, sqlite3.OperationalError) and any(p in message for p in _REQUEST_ERRORS):
                return BadRequest(f"SQLite: {message}")
            return ConnectionFailed(f"SQLite: {message}" + (f" ({self.path})" if "unable to open" in message else ""))
        return super()._failure(exc)

    def _target(self, table: str, schema: str | None) -> str:
        return f"{_q(schema)}.{_q(table)}" if schema else _q(table)

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def _open(self, *, create_missing: bool = False) -> None:
        if not create_missing and not self.memory and not self.path.exists():
            return  # a destination creates it on first write; a source fails on first use
        self._conn = await self._run(self._connect, create_missing)

    async def _ensure_created(self) -> None:
        if self._conn is None:
            self._conn = await self._run(self._connect, True)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None

    async def _ping(self) -> None:
        await self._run(lambda: self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone())

    # --- metadata ---------------------------------------------------------------------------------------------------

    async def _list_tables(self, kind: str, schema: str | None) -> list[TableInfo]:
        types = {"TABLES": ("table",), "VIEWS": ("view",), "ALL": ("table", "view")}[kind]
        master = f"{_q(schema)}.sqlite_master" if schema else "sqlite_master"
        sql = (f"SELECT name, type FROM {master} WHERE type IN ({', '.join('?' * len(types))}) "
               "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
        rows = await self._run(lambda: self.conn.execute(sql, types).fetchall())
        return [TableInfo(name, schema or "main", None, "VIEW" if kind_ == "view" else "TABLE") for name, kind_ in rows]

    async def _list_columns(self, table: str, schema: str | None) -> list[ColumnInfo]:
        pragma = f"PRAGMA {_q(schema)}.table_xinfo({_q(table)})" if schema else f"PRAGMA table_xinfo({_q(table)})"
        rows = await self._run(lambda: self.conn.execute(pragma).fetchall())
        columns = []
        for _cid, name, declared, notnull, _default, pk, hidden in rows:
            if hidden == 1:  # hidden columns of virtual tables
                continue
            ctype = sqlite_to_canonical(declared or "")
            columns.append(ColumnInfo(name=name, native_type=declared or "", canonical=ctype,
                                      nullable=not notnull and not pk, max_length=ctype.length,
                                      precision=ctype.precision, scale=ctype.scale, primary_key=pk > 0,
                                      ordinal=len(columns) + 1))
        return columns

    async def _estimate_rows(self, table: str, schema: str | None) -> int | None:
        target = self._target(table, schema)

        def estimate() -> int:
            try:
                return self.conn.execute(f"SELECT max(_rowid_) FROM {target}").fetchone()[0] or 0
            except sqlite3.OperationalError:  # WITHOUT ROWID tables
                return self.conn.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
        return await self._run(estimate)

    # --- reading ----------------------------------------------------------------------------------------------------

    async def _query_columns(self, query: str) -> list[ColumnInfo]:
        """Column names and declared types of a SELECT, read from a temporary view over it."""
        view = f"_odsync_probe_{next(_stage_ids)}"

        def probe() -> list[tuple]:
            self.conn.execute(f"CREATE TEMP VIEW {_q(view)} AS {query}")
            try:
                return self.conn.execute(f"PRAGMA temp.table_info({_q(view)})").fetchall()
            finally:
                self.conn.execute(f"DROP VIEW temp.{_q(view)}")
        rows = await self._run(probe)
        columns = []
        for i, (_cid, name, declared, *_rest) in enumerate(rows):
            ctype = sqlite_to_canonical(declared) if declared else CanonicalType("text")
            columns.append(ColumnInfo(name=name, native_type=declared or "", canonical=ctype, max_length=ctype.length,
                                      precision=ctype.precision, scale=ctype.scale, ordinal=i + 1))
        return columns

    async def _start_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                          where: list, order_by: list[str], batch_size: int) -> tuple[list[ColumnInfo], BatchReader]:
        if table is not None:
            schema, name = table
            available = await self._read_columns(name, schema, columns)
            from_sql = self._target(name, schema)
            untyped = set()
        else:
            available = await self._query_columns(query or "")
            if columns:
                available = pick_columns(available, columns)
            from_sql = f"({query}) AS _q"
            untyped = {c.name for c in available if not c.native_type}
        types = {c.name: c.canonical for c in available}

        def encode(column: str, value: Any) -> Any:
            ctype = types.get(column)
            if ctype is None:
                return value
            converter = values.compose(values.coercer(ctype), _encoder(ctype, for_compare=True))
            return converter(value) if converter else value

        if query is not None and not (columns or where or order_by):
            sql, params = query, []  # as written: wrapping could make duplicate column names ambiguous
        else:
            sql, params = build_select("", [c.name for c in available], where, order_by, quote=_q, from_sql=from_sql,
                                       placeholder=lambda i: "?", encode=encode)

        def start() -> tuple[sqlite3.Cursor, list[tuple] | None]:
            cursor = self.conn.execute(sql, params)
            return cursor, (cursor.fetchmany(batch_size) if untyped else None)
        cursor, first = await self._run(start)
        if query is not None and cursor.description:  # the view renames repeated names ('id:1'); the query does not
            available = [replace(c, name=d[0]) for c, d in zip(available, cursor.description, strict=True)]
        if untyped:
            available = [self._inferred(c, i, first or []) if c.name in untyped else c
                         for i, c in enumerate(available)]
        converters = [values.compose(values.coercer(c.canonical)) for c in available]
        return available, _Reader(self, cursor, converters, first)

    @staticmethod
    def _inferred(column: ColumnInfo, index: int, rows: list[tuple]) -> ColumnInfo:
        sample = next((row[index] for row in rows if row[index] is not None), None)
        return ColumnInfo.of(column.name, _infer(sample), ordinal=column.ordinal)

    # --- writing ----------------------------------------------------------------------------------------------------

    async def _create_table(self, table: str, columns: list[ColumnInfo], primary_key: list[str],
                            schema: str | None) -> list[TypeWarning]:
        parts, warnings = column_definitions(self.provider, columns, primary_key, _q)
        sql = f"CREATE TABLE {self._target(table, schema)} ({', '.join(parts)})"
        await self._run(self.conn.execute, sql)
        return warnings

    def _insert(self, target: str, columns: list[ColumnInfo], rows: Sequence[Sequence[Any]]) -> None:
        encoded = values.convert_rows(rows, encoders(columns))
        names = ", ".join(_q(c.name) for c in columns)
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(f"INSERT INTO {target} ({names}) VALUES ({marks})", encoded)

    async def _write_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                           rows: Sequence[Sequence[Any]]) -> None:
        await self._run(self._insert, self._target(table, schema), columns, rows)

    def _stage(self, table: str, schema: str | None, columns: list[ColumnInfo], rows: Sequence[Sequence[Any]]) -> str:
        stage = f"temp.{_q(f'_odsync_stage_{next(_stage_ids)}')}"
        names = ", ".join(_q(c.name) for c in columns)
        self.conn.execute(f"CREATE TEMP TABLE {stage.removeprefix('temp.')} AS SELECT {names} "
                          f"FROM {self._target(table, schema)} WHERE 0")
        self._insert(stage, columns, rows)
        return stage

    def _count(self, sql: str) -> int:
        return self.conn.execute(sql).rowcount

    async def _execute(self, sql: str, params: list[Any]) -> int:
        cursor = await self._run(self.conn.execute, sql, params)
        return max(cursor.rowcount, 0)

    # --- transactions -----------------------------------------------------------------------------------------------

    async def _begin(self) -> None:
        await self._run(self.conn.execute, "BEGIN IMMEDIATE")

    async def _commit(self) -> None:
        await self._run(self.conn.execute, "COMMIT")

    async def _rollback(self) -> None:
        def rollback() -> None:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        await self._run(rollback)

