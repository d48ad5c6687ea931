"""MySQL and MariaDB: source and destination through aiomysql.

The session runs in UTC so TIMESTAMP columns read and write instants. Reads stream through an unbuffered cursor
(``SSCursor``); writes are multi-row INSERTs sized to the server's packet limit.
DDL commits implicitly in MySQL: create or alter tables outside the transaction that holds a batch and its checkpoint.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import ssl
import uuid
from collections.abc import Sequence
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import FIELD_TYPE

from odata_sync.errors import BadRequest, ConnectionFailed, ODataSyncError

from . import values
from .base import BatchReader, ColumnInfo, Connector, TableInfo, WriteCounts
from .sql import brackets_to_quotes, build_select, column_definitions, delete_statement, merge_statements, quote_ident
from .types import CanonicalType, TypeWarning, decimal, mysql_to_canonical, string, to_native

_stage_ids = itertools.count(1)
_REQUEST_ERRORS = {1050, 1051, 1054, 1060, 1064, 1146, 1166, 1091, 1109, 1052, 1110, 1136, 1222, 1241, 1247}
_BINARY_CHARSET = 63
_UNSIGNED = 32
_JSON_CHECK = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)
_TIME_KINDS = ("date", "time", "timestamp", "timestamptz")


def _q(name: str) -> str:
    return quote_ident(name, "`")


def _encoder(ctype: CanonicalType) -> values.Converter | None:
    """Canonical value -> what aiomysql should send for ``ctype``."""
    if ctype.kind == "timestamptz":
        return lambda v: v.astimezone(values.UTC).replace(tzinfo=None)
    if ctype.kind == "uuid":
        return str
    if ctype.kind == "boolean":
        return int
    return None


def _encoders(columns: Sequence[ColumnInfo]) -> list[values.Converter | None]:
    return [values.compose(values.coercer(c.canonical), _encoder(c.canonical)) for c in columns]


def _param(value: Any) -> Any:
    """A filter value as MySQL compares it: instants as UTC wall time (the session's zone), UUIDs as text."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(values.UTC).replace(tzinfo=None)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _decoder(ctype: CanonicalType) -> values.Converter | None:
    coerce = values.coercer(ctype)
    if ctype.kind in _TIME_KINDS:
        def zero_dates_are_null(value: Any) -> Any:  # MySQL's '0000-00-00' has no date equivalent
            if isinstance(value, str) and value.startswith("0000-00-00"):
                return None
            return coerce(value)
        return values.compose(zero_dates_are_null)
    return values.compose(coerce)


def _field_type(field: Any) -> CanonicalType:
    """The canonical type of a result column of an arbitrary SELECT, from the protocol's field description."""
    code, binary = field.type_code, field.charsetnr == _BINARY_CHARSET
    unsigned = bool(field.flags & _UNSIGNED)
    if code == FIELD_TYPE.TINY:
        return CanonicalType("boolean") if field.length == 1 else CanonicalType("int16")
    if code in (FIELD_TYPE.SHORT, FIELD_TYPE.YEAR):
        return CanonicalType("int32" if unsigned else "int16")
    if code in (FIELD_TYPE.LONG, FIELD_TYPE.INT24):
        return CanonicalType("int64" if unsigned else "int32")
    if code == FIELD_TYPE.LONGLONG:
        return decimal(20, 0) if unsigned else CanonicalType("int64")
    if code in (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL):
        scale = field.scale or 0
        return decimal(max(field.length - (1 if scale else 0) - (0 if unsigned else 1), 1), scale)
    if code == FIELD_TYPE.FLOAT:
        return CanonicalType("float32")
    if code == FIELD_TYPE.DOUBLE:
        return CanonicalType("float64")
    if code == FIELD_TYPE.BIT:
        return CanonicalType("boolean") if field.length == 1 else CanonicalType("int64")
    if code in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return CanonicalType("date")
    if code == FIELD_TYPE.TIME:
        return CanonicalType("time")
    if code == FIELD_TYPE.DATETIME:
        return CanonicalType("timestamp")
    if code == FIELD_TYPE.TIMESTAMP:
        return CanonicalType("timestamptz")
    if code == FIELD_TYPE.JSON:
        return CanonicalType("json")
    if binary and code in (FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING, FIELD_TYPE.VARCHAR, FIELD_TYPE.BLOB,
                           FIELD_TYPE.TINY_BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.LONG_BLOB, FIELD_TYPE.GEOMETRY):
        return CanonicalType("binary")
    return string(None)


class _QuietCursor(aiomysql.Cursor):
    """No SHOW WARNINGS round trip and Python warning per statement: the session is strict, so what matters fails."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


class _QuietStreamingCursor(aiomysql.SSCursor):
    async def _show_warnings(self, conn: Any) -> None:
        return None


class _Reader:
    def __init__(self, cursor: Any, converters: list) -> None:
        self._cursor, self._converters = cursor, converters

    async def fetch(self, size: int) -> list[tuple]:
        rows = await self._cursor.fetchmany(size)
        return values.convert_rows(rows, self._converters)

    async def close(self) -> None:
        await self._cursor.close()  # drains what was not read


class MySQLConnector(Connector):
    provider = "MySQL"
    driver_errors = (pymysql.err.MySQLError,)
    untransactional_ddl = frozenset({"create_table", "add_column", "drop_table", "rename_table", "swap_tables"})

    def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._conn: aiomysql.Connection | None = None
        self.database = settings["Database"]
        self._statement_limit = 1 << 20

    @property
    def conn(self) -> aiomysql.Connection:
        if self._conn is None or self._conn.closed:
            raise ConnectionFailed("MySQL: the connection is closed")
        return self._conn

    def _failure(self, exc: BaseException) -> ODataSyncError | None:
        if isinstance(exc, pymysql.err.MySQLError):
            code, text = (exc.args + (None, None))[:2] if exc.args else (None, None)
            if not isinstance(code, int):
                code, text = None, " ".join(str(a) for a in exc.args)
            cause = exc.__cause__ or exc.__context__
            detail = f": {' '.join(str(cause).split())}" if isinstance(cause, OSError) and str(cause) else ""
            message = self._scrub(f"MySQL: {' '.join(str(text or type(exc).__name__).split())}"
                                  + (f" (error {code})" if code else "") + detail)
            if code in _REQUEST_ERRORS:
                return BadRequest(message)
            return ConnectionFailed(message)
        if isinstance(exc, OSError):
            return ConnectionFailed(self._scrub(f"MySQL: {' '.join(str(exc).split()) or type(exc).__name__}"))
        return None

    def _target(self, table: str, schema: str | None) -> str:
        return f"{_q(schema)}.{_q(table)}" if schema else _q(table)

    def _ssl(self) -> ssl.SSLContext | None:
        mode = self.settings.get("SSLMode")
        if mode in (None, "disable"):
            return None
        context = ssl.create_default_context()
        if mode in ("allow", "prefer", "require"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif mode == "verify-ca":
            context.check_hostname = False
        return context

    def _literal(self, value: Any) -> str:
        """A value as SQL text. Bytes are written as hex: aiomysql's own bytes escaping is broken with PyMySQL 1.1+."""
        if isinstance(value, bytes | bytearray | memoryview):
            return f"X'{bytes(value).hex()}'"
        return self.conn.escape(value)

    def _render(self, sql: str, params: Sequence[Any]) -> str:
        """``%s`` placeholders (PyMySQL's paramstyle) replaced by escaped literals."""
        return sql % tuple(self._literal(p) for p in params) if params else sql

    async def _cursor(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.conn.cursor(_QuietCursor) as cursor:
            await cursor.execute(self._render(sql, params))
            return cursor.rowcount

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        async with self.conn.cursor(_QuietCursor) as cursor:
            await cursor.execute(self._render(sql, params))
            return list(await cursor.fetchall())

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def _open(self, *, create_missing: bool = False) -> None:
        s = self.settings
        self._conn = await aiomysql.connect(
            host=s["Server"], port=s["Port"], user=s["User"], password=s.get("Password") or "", db=s["Database"],
            connect_timeout=self.timeout or 60, autocommit=True, charset="utf8mb4", ssl=self._ssl(),
            init_command="SET time_zone = '+00:00', sql_mode = TRIM(BOTH ',' FROM "
                         "CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))")
        packet = (await self._fetch("SELECT @@max_allowed_packet"))[0][0]
        self._statement_limit = max(1 << 20, min(int(packet) // 2, 16 << 20))

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.ensure_closed()
            except Exception:  # a broken connection: drop the socket
                conn.close()

    async def _ping(self) -> None:
        await self._fetch("SELECT 1")

    # --- metadata ---------------------------------------------------------------------------------------------------

    async def _list_tables(self, kind: str, schema: str | None) -> list[TableInfo]:
        types = {"TABLES": ("BASE TABLE", "SYSTEM VERSIONED"), "VIEWS": ("VIEW",),
                 "ALL": ("BASE TABLE", "SYSTEM VERSIONED", "VIEW")}[kind]
        rows = await self._fetch(
            "SELECT TABLE_NAME, TABLE_SCHEMA, TABLE_TYPE FROM information_schema.TABLES "
            f"WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_TYPE IN ({', '.join(['%s'] * len(types))})",
            (schema, *types))
        return [TableInfo(name, db, None, "VIEW" if kind_ == "VIEW" else "TABLE") for name, db, kind_ in rows]

    async def _json_columns(self, table: str, schema: str | None) -> set[str]:
        """MariaDB's JSON is LONGTEXT with a json_valid() check: find those columns to keep them JSON."""
        try:
            rows = await self._fetch(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s", (schema, table))
        except pymysql.err.MySQLError:  # MySQL: native JSON type, and no TABLE_NAME column here
            return set()
        return {m.group(1).replace("``", "`") for (clause,) in rows for m in _JSON_CHECK.finditer(clause or "")}

    async def _list_columns(self, table: str, schema: str | None) -> list[ColumnInfo]:
        rows = await self._fetch(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (schema, table))
        json_columns = await self._json_columns(table, schema) if rows else set()
        columns = []
        for name, native, nullable, key in rows:
            native = native.decode() if isinstance(native, bytes) else native
            ctype = CanonicalType("json") if name in json_columns else mysql_to_canonical(native)
            columns.append(ColumnInfo(name=name, native_type="json" if name in json_columns else native,
                                      canonical=ctype, nullable=nullable == "YES", max_length=ctype.length,
                                      precision=ctype.precision, scale=ctype.scale, primary_key=key == "PRI",
                                      ordinal=len(columns) + 1))
        return columns

    async def _estimate_rows(self, table: str, schema: str | None) -> int | None:
        rows = await self._fetch("SELECT TABLE_ROWS FROM information_schema.TABLES "
                                 "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s", (schema, table))
        if not rows:
            raise BadRequest(f"table '{table}' was not found", target="Table")
        if rows[0][0] is None:  # views
            return int((await self._fetch(f"SELECT count(*) FROM {self._target(table, schema)}"))[0][0])
        return int(rows[0][0])

    # --- reading ----------------------------------------------------------------------------------------------------

    async def _start_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                          where: list, order_by: list[str], batch_size: int) -> tuple[list[ColumnInfo], BatchReader]:
        available: list[ColumnInfo] | None = None
        if table is not None:
            schema, name = table
            available = await self._read_columns(name, schema, columns)
            columns = [c.name for c in available]
            from_sql = self._target(name, schema)
        else:
            query = brackets_to_quotes(query or "", "`")
            from_sql = f"({query}) AS _q"
        if table is None and not (columns or where or order_by):
            sql = query or ""  # as written: wrapping could make duplicate column names ambiguous
        else:
            marker = "\x00{}\x00"
            sql, params = build_select("", columns or None, where, order_by, quote=_q, from_sql=from_sql,
                                       placeholder=marker.format, encode=lambda _column, value: _param(value))
            for i, param in enumerate(params, 1):
                sql = sql.replace(marker.format(i), self._literal(param))
        cursor = await self.conn.cursor(_QuietStreamingCursor)
        try:
            await cursor.execute(sql)
            if available is None:  # a query: the server describes its result before the first row
                fields = cursor._result.fields if cursor._result is not None else []
                available = [ColumnInfo.of(f.name, _field_type(f), ordinal=i + 1) for i, f in enumerate(fields)]
        except BaseException:
            await cursor.close()
            raise
        return available, _Reader(cursor, [_decoder(c.canonical) for c in available])

    # --- writing ----------------------------------------------------------------------------------------------------

    async def _create_table(self, table: str, columns: list[ColumnInfo], primary_key: list[str],
                            schema: str | None) -> list[TypeWarning]:
        parts, warnings = column_definitions(self.provider, columns, primary_key, _q)
        if schema and schema != self.database:
            await self._cursor(f"CREATE DATABASE IF NOT EXISTS {_q(schema)}")
        await self._cursor(f"CREATE TABLE {self._target(table, schema)} ({', '.join(parts)}) "
                           "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
        return warnings

    async def _add_column(self, table: str, column: ColumnInfo, schema: str | None) -> list[TypeWarning]:
        native = to_native(self.provider, column.canonical)
        await self._cursor(f"ALTER TABLE {self._target(table, schema)} ADD COLUMN {_q(column.name)} {native.ddl}")
        return [TypeWarning(self.provider, column.name, str(column.canonical), native.ddl, native.lossy)] \
            if native.lossy else []

    def _literal_for(self, ctype: CanonicalType) -> Any:
        """The fastest correct SQL-literal writer for values already encoded for ``ctype``."""
        kind = ctype.kind
        if ctype.is_integer or kind == "boolean":
            return str
        if kind == "decimal":
            return lambda v: format(v, "f")
        if kind in ("string", "text", "json", "uuid"):
            escape = self.conn.escape_string
            return lambda v: "'" + escape(v) + "'"
        return self._literal

    async def _insert(self, target: str, columns: list[ColumnInfo], rows: Sequence[Sequence[Any]]) -> None:
        """Multi-row INSERT statements, each as large as the server's packet limit comfortably allows."""
        encoded = values.convert_rows(rows, _encoders(columns))
        writers = [self._literal_for(c.canonical) for c in columns]
        prefix = f"INSERT INTO {target} ({', '.join(_q(c.name) for c in columns)}) VALUES "
        chunk: list[str] = []
        size = len(prefix)
        async with self.conn.cursor(_QuietCursor) as cursor:
            for row in encoded:
                text = "(" + ",".join("NULL" if v is None else write(v)
                                      for v, write in zip(row, writers, strict=True)) + ")"
                if chunk and size + len(text) + 1 > self._statement_limit:
                    await cursor.execute(prefix + ",".join(chunk))
                    chunk, size = [], len(prefix)
                chunk.append(text)
                size += len(text) + 1
            if chunk:
                await cursor.execute(prefix + ",".join(chunk))

    async def _write_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                           rows: Sequence[Sequence[Any]]) -> None:
        await self._insert(self._target(table, schema), columns, rows)

    async def _stage(self, table: str, schema: str | None, columns: list[ColumnInfo],
                     rows: Sequence[Sequence[Any]]) -> str:
        stage = _q(f"_odsync_stage_{next(_stage_ids)}")
        names = ", ".join(_q(c.name) for c in columns)
        await self._cursor(f"CREATE TEMPORARY TABLE {stage} SELECT {names} FROM {self._target(table, schema)} LIMIT 0")
        await self._insert(stage, columns, rows)
        return stage

    async def _upsert_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                            rows: Sequence[Sequence[Any]], key: list[str]) -> WriteCounts:
        key = [next(c.name for c in columns if c.name.lower() == k.lower()) for k in key]
        textual = {c.name for c in columns if c.canonical.is_textual}

        def differs(left: str, right: str, column: str) -> str:
            if column in textual:  # a case-insensitive collation must not hide a change of case
                return f"NOT (CAST({left} AS BINARY) <=> CAST({right} AS BINARY))"
            return f"NOT ({left} <=> {right})"

        stage = await self._stage(table, schema, columns, rows)
        try:
            delete, insert = merge_statements(self._target(table, schema), stage, [c.name for c in columns], key, _q,
                                              differs, join_delete=True)
            updated = await self._cursor(delete)
            written = await self._cursor(insert)
        finally:
            await self._cursor(f"DROP TEMPORARY TABLE IF EXISTS {stage}")
        return WriteCounts(inserted=written - updated, updated=updated)

    async def _delete_keys(self, table: str, schema: str | None, key_columns: list[ColumnInfo],
                           keys: Sequence[Sequence[Any]]) -> int:
        stage = await self._stage(table, schema, key_columns, keys)
        try:
            return await self._cursor(delete_statement(self._target(table, schema), stage,
                                                       [c.name for c in key_columns], _q, join_delete=True))
        finally:
            await self._cursor(f"DROP TEMPORARY TABLE IF EXISTS {stage}")

    async def _drop_table(self, table: str, schema: str | None) -> None:
        await self._cursor(f"DROP TABLE IF EXISTS {self._target(table, schema)}")

    async def _truncate(self, table: str, schema: str | None) -> None:
        # TRUNCATE commits implicitly; inside the caller's transaction a DELETE keeps it atomic.
        verb = "DELETE FROM" if self._in_transaction else "TRUNCATE TABLE"
        await self._cursor(f"{verb} {self._target(table, schema)}")

    async def _rename_table(self, table: str, new_name: str, schema: str | None) -> None:
        await self._cursor(f"RENAME TABLE {self._target(table, schema)} TO {self._target(new_name, schema)}")

    async def _swap_tables(self, first: str, second: str, schema: str | None) -> None:
        spare = self._target(f"_odsync_swap_{next(_stage_ids)}", schema)
        a, b = self._target(first, schema), self._target(second, schema)
        await self._cursor(f"RENAME TABLE {a} TO {spare}, {b} TO {a}, {spare} TO {b}")  # one atomic statement

    async def _execute(self, sql: str, params: list[Any]) -> int:
        return max(await self._cursor(sql, params), 0)

    # --- transactions -----------------------------------------------------------------------------------------------

    async def _begin(self) -> None:
        await self.conn.begin()

    async def _commit(self) -> None:
        await self.conn.commit()

    async def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            await self._conn.rollback()

