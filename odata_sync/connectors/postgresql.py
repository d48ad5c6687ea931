"""PostgreSQL: source and destination through asyncpg.

Reads use a server-side cursor inside a read-only transaction; writes use binary COPY (``copy_records_to_table``), and
upserts COPY into a temporary table and merge from there, so a batch costs a few round trips whatever its size.
"""

from __future__ import annotations

import itertools
import re
import ssl
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

import asyncpg

from odata_sync.errors import BadRequest, ConnectionFailed, ODataSyncError

from . import values
from .base import BatchReader, ColumnInfo, Connector, TableInfo, WriteCounts, pick_columns
from .sql import (
    brackets_to_quotes,
    build_select,
    column_definitions,
    delete_statement,
    merge_statements,
    quote_ident,
)
from .types import PG_NATIVE_DECODED, CanonicalType, TypeWarning, _split, pg_to_canonical, to_native

_stage_ids = itertools.count(1)
#: Upserts of at most this many rows bind them as parameters instead of staging them (``_upsert_bound``), when every
#: column has one of these built-in types (not ``character``: a bare cast to it means char(1)).
_BOUND_ROWS = 16
_BOUND_TYPES = frozenset({
    "smallint", "integer", "bigint", "real", "double precision", "numeric", "boolean", "text", "character varying",
    "bytea", "date", "time without time zone", "time with time zone", "timestamp without time zone",
    "timestamp with time zone", "interval", "uuid", "json", "jsonb"})
_TYPMOD = re.compile(r"\(\d+(?:,\d+)?\)")
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
_TABLE_KINDS = {"TABLES": ["r", "p", "f"], "VIEWS": ["v", "m"], "ALL": ["r", "p", "f", "v", "m"]}
#: Types without an equality operator: compared as text when an upsert looks for changed rows.
_NO_EQUALITY = ("json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle")


def _q(name: str) -> str:
    return quote_ident(name, '"')


def _select_expr(column: ColumnInfo) -> str:
    """How a column is selected so that asyncpg hands back its canonical value."""
    native = column.native_type.lower()
    if native.endswith("]"):
        return f"to_json({_q(column.name)})"
    base = native.split("(")[0].strip()
    if base in PG_NATIVE_DECODED or native in PG_NATIVE_DECODED or native.startswith(("timestamp", "time without")):
        return _q(column.name)
    return f"{_q(column.name)}::text"


#: Types asyncpg decodes straight into the canonical value of the kind ``pg_to_canonical`` gives them; the rest (uuid,
#: ``"char"``, extension and domain types, arrays) keep their coercer.
_DECODED_CANONICAL = frozenset({
    "smallint", "int2", "integer", "int", "int4", "bigint", "int8", "oid", "real", "float4", "double precision",
    "float8", "boolean", "bool", "text", "name", "character varying", "varchar", "character", "char", "bpchar",
    "numeric", "decimal", "date", "bytea", "json", "jsonb", "xml", "time without time zone", "time",
    "timestamp without time zone", "timestamp", "timestamp with time zone", "timestamptz"})
_TEXT_KINDS = frozenset({"string", "text", "json"})


def _read_converter(column: ColumnInfo, *, as_selected: bool) -> values.Converter | None:
    """The converter a read applies to a column's values; None when asyncpg already returns the canonical value.

    ``as_selected``: the column is read through ``_select_expr`` (a table read), else as a query returns it."""
    if as_selected and _select_expr(column) != _q(column.name):  # read as text (::text, to_json)
        if column.canonical.kind in _TEXT_KINDS:
            return None
    else:
        bare = _split(column.native_type)[3]
        if bare in _DECODED_CANONICAL and pg_to_canonical(column.native_type).kind == column.canonical.kind:
            return None
    return values.coercer(column.canonical)


def _differs(columns: Sequence[ColumnInfo]) -> Any:
    """The null-safe inequality of two values of a column (as text for types without equality)."""
    native = {c.name: c.native_type.lower() for c in columns}

    def differs(left: str, right: str, column: str) -> str:
        if native.get(column, "").split("(")[0] in _NO_EQUALITY:
            return f"{left}::text IS DISTINCT FROM {right}::text"
        return f"{left} IS DISTINCT FROM {right}"
    return differs


def _conflict_upsert(target: str, stage: str, columns: Sequence[str], key: Sequence[str],
                     differs: Callable[[str, str, str], str]) -> str:
    """One statement upserting a staged batch through the unique index on ``key`` (``INSERT … ON CONFLICT``): one
    index probe per staged row, where ``merge_statements``' delete may scan the whole target. It returns one row:
    the rows inserted and the rows updated (a new row's ``xmax`` is 0); a row equal to the staged one is not touched."""
    names = ", ".join(_q(c) for c in columns)
    keys = ", ".join(_q(k) for k in key)
    others = [c for c in columns if c not in key]
    if others:
        assign = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in others)
        diff = " OR ".join(differs(f"EXCLUDED.{_q(c)}", f"_t.{_q(c)}", c) for c in others)
        action = f"DO UPDATE SET {assign} WHERE {diff}"
    else:
        action = "DO NOTHING"
    return (f"WITH _w AS (INSERT INTO {target} AS _t ({names}) SELECT {names} FROM {stage} "
            f"ON CONFLICT ({keys}) {action} RETURNING _t.xmax = 0 AS _new) "
            f"SELECT count(*) FILTER (WHERE _new), count(*) FILTER (WHERE NOT _new) FROM _w")


class _Reader:
    def __init__(self, cursor: Any, transaction: Any, converters: list) -> None:
        self._cursor, self._transaction, self._converters = cursor, transaction, converters

    async def fetch(self, size: int) -> list[tuple]:
        if self._cursor is None:
            return []
        records = await self._cursor.fetch(size)
        return values.convert_rows(records, self._converters)

    async def close(self) -> None:
        self._cursor = None
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            await transaction.rollback()  # read-only: nothing to keep


class PostgreSQLConnector(Connector):
    provider = "PostgreSQL"
    driver_errors = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    skips_ready_columns = True
    defers_primary_key = True

    def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self.default_schema = "public"
        self.database = settings["Database"]

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            raise ConnectionFailed("PostgreSQL: the connection is closed")
        return self._conn

    def _failure(self, exc: BaseException) -> ODataSyncError | None:
        if isinstance(exc, asyncpg.PostgresError):
            message = self._scrub(f"PostgreSQL: {' '.join(str(exc).split())}")
            state = getattr(exc, "sqlstate", "") or ""
            if state.startswith("42") and state != "42501":  # syntax error, undefined table/column...
                return BadRequest(message)
            if state.startswith(("22", "23")):  # a value the column cannot hold; a duplicate key, a NULL in a key
                return BadRequest(message)
            return ConnectionFailed(message)
        if isinstance(exc, ssl.SSLError | OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
            return ConnectionFailed(self._scrub(f"PostgreSQL: {' '.join(str(exc).split()) or type(exc).__name__}"))
        if isinstance(exc, OverflowError | ValueError):  # a value that does not fit its column, or one read that
            # Python cannot hold (year 10000, a BC date, 24:00:00)
            return BadRequest(self._scrub(f"PostgreSQL: a value is out of range ({exc}); dates and times must lie "
                                          f"within 0001-01-01 .. 9999-12-31 23:59:59.999999"))
        return None

    def _target(self, table: str, schema: str | None) -> str:
        """Qualified when a schema is given; otherwise resolved through the search path, like any client would."""
        return f"{_q(schema)}.{_q(table)}" if schema else _q(table)

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def _open(self, *, create_missing: bool = False) -> None:
        self._conn = await self.connect_another()
        self.default_schema = await self._conn.fetchval("SELECT current_schema()") or "public"

    async def connect_another(self, **server_settings: str) -> asyncpg.Connection:
        """A new connection with this connector's settings (the caller closes it): parallel copies use several.
        ``server_settings``: PostgreSQL settings for this connection only."""
        s = self.settings
        sslmode = s.get("SSLMode")
        return await asyncpg.connect(
            host=s["Server"], port=s["Port"], user=s["User"], password=s.get("Password") or None,
            database=s["Database"], timeout=self.timeout or 60, ssl=sslmode if sslmode else None,
            server_settings={"application_name": "odata-sync", **server_settings})

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=self.timeout or 10)
            except Exception:  # closing a broken connection: terminate it instead
                conn.terminate()

    async def _ping(self) -> None:
        await self.conn.fetchval("SELECT 1")

    # --- metadata ---------------------------------------------------------------------------------------------------

    async def _list_tables(self, kind: str, schema: str | None) -> list[TableInfo]:
        rows = await self.conn.fetch(
            """SELECT c.relname, n.nspname, c.relkind::text AS relkind, current_database() AS catalog
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind::text = ANY($1::text[]) AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                 AND ($2::text IS NULL OR n.nspname = $2)""", _TABLE_KINDS[kind], schema)
        return [TableInfo(r["relname"], r["nspname"], r["catalog"], "VIEW" if r["relkind"] in ("v", "m") else "TABLE")
                for r in rows]

    async def _list_columns(self, table: str, schema: str | None) -> list[ColumnInfo]:
        rows = await self.conn.fetch(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS native, a.attnotnull,
                      coalesce(a.attnum = ANY(i.indkey), false) AS pk
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
               WHERE c.oid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""", self._target(table, schema))
        columns = []
        for r in rows:
            ctype = pg_to_canonical(r["native"])
            columns.append(ColumnInfo(name=r["attname"], native_type=r["native"], canonical=ctype,
                                      nullable=not r["attnotnull"], max_length=ctype.length,
                                      precision=ctype.precision, scale=ctype.scale, primary_key=r["pk"],
                                      ordinal=len(columns) + 1))
        return columns

    async def _estimate_rows(self, table: str, schema: str | None) -> int | None:
        target = self._target(table, schema)
        estimate = await self.conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
                                            target)
        if estimate is None:
            raise BadRequest(f"table '{table}' was not found", target="Table")
        if estimate < 0:  # never analysed: count it
            estimate = await self.conn.fetchval(f"SELECT count(*) FROM {target}")
        return int(estimate)

    # --- reading ----------------------------------------------------------------------------------------------------

    async def _start_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                          where: list, order_by: list[str], batch_size: int) -> tuple[list[ColumnInfo], BatchReader]:
        nested = self.conn.is_in_transaction()
        transaction = self.conn.transaction() if nested else self.conn.transaction(readonly=True,
                                                                                   isolation="repeatable_read")
        await transaction.start()  # before any statement: the isolation level must come first
        try:
            available, sql, params = await self._plan_read(query, table, columns, where, order_by)
            cursor = await (await self.conn.prepare(sql)).cursor(*params)
        except BaseException:
            await transaction.rollback()
            raise
        converters = [_read_converter(c, as_selected=table is not None) for c in available]
        return available, _Reader(cursor, transaction, converters)

    async def _plan_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                         where: list, order_by: list[str]) -> tuple[list[ColumnInfo], str, list[Any]]:
        """The columns a read returns and the statement (with parameters) that reads them."""
        if table is not None:
            schema, name = table
            available = await self._read_columns(name, schema, columns)
            select_list = [_select_expr(c) + (f" AS {_q(c.name)}" if _select_expr(c) != _q(c.name) else "")
                           for c in available]
            from_sql = self._target(name, schema)
        else:
            query = brackets_to_quotes(query or "", '"')
            probe = await self.conn.prepare(query)
            available = [ColumnInfo.of(a.name, pg_to_canonical(a.type.name) if a.type.kind != "array"
                                       else CanonicalType("json"), native_type=a.type.name, ordinal=i + 1)
                         for i, a in enumerate(probe.get_attributes())]
            if not (columns or where or order_by):
                return available, query, []  # as written: wrapping could make repeated column names ambiguous
            if columns:
                available = pick_columns(available, columns)
            select_list = None
            from_sql = f"({query}) AS _q"
        types = {c.name: c.canonical for c in available}

        def encode(column: str, value: Any) -> Any:
            return values.coercer(types[column])(value) if column in types else value

        sql, params = build_select("", [c.name for c in available], where, order_by, quote=_q, from_sql=from_sql,
                                   placeholder=lambda i: f"${i}", encode=encode, select_list=select_list)
        return available, sql, params

    # --- writing ----------------------------------------------------------------------------------------------------

    async def _create_table(self, table: str, columns: list[ColumnInfo], primary_key: list[str],
                            schema: str | None) -> list[TypeWarning]:
        parts, warnings = column_definitions(self.provider, columns, primary_key, _q)
        if schema:
            await self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
        await self.conn.execute(f"CREATE TABLE {self._target(table, schema)} ({', '.join(parts)})")
        return warnings

    async def _add_column(self, table: str, column: ColumnInfo, schema: str | None) -> list[TypeWarning]:
        native = to_native(self.provider, column.canonical)
        await self.conn.execute(f"ALTER TABLE {self._target(table, schema)} ADD COLUMN {_q(column.name)} {native.ddl}")
        return [TypeWarning(self.provider, column.name, str(column.canonical), native.ddl, native.lossy)] \
            if native.lossy else []

    async def _add_primary_key(self, table: str, key: list[str], schema: str | None) -> None:
        await self.conn.execute(f"ALTER TABLE {self._target(table, schema)} "
                                f"ADD PRIMARY KEY ({', '.join(_q(k) for k in key)})")

    async def _copy(self, table: str, schema: str | None, columns: list[ColumnInfo],
                    rows: Sequence[Sequence[Any]], ready: frozenset[int] = frozenset()) -> None:
        converters = [None if i in ready else values.coercer(c.canonical) for i, c in enumerate(columns)]
        # values already canonical for every column go to COPY as they are (asyncpg checks their types itself)
        records = rows if all(c is None for c in converters) else values.convert_rows(rows, converters)
        await self.conn.copy_records_to_table(table, records=records, columns=[c.name for c in columns],
                                              schema_name=schema, timeout=self.timeout)

    async def _write_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                           rows: Sequence[Sequence[Any]], ready: frozenset[int] = frozenset()) -> None:
        await self._copy(table, schema, columns, rows, ready)

    async def _stage(self, table: str, schema: str | None, columns: list[ColumnInfo],
                     rows: Sequence[Sequence[Any]], ready: frozenset[int] = frozenset()) -> str:
        stage = f"_odsync_stage_{next(_stage_ids)}"
        names = ", ".join(_q(c.name) for c in columns)
        await self.conn.execute(f"CREATE TEMP TABLE {_q(stage)} ON COMMIT DROP AS "
                                f"SELECT {names} FROM {self._target(table, schema)} WITH NO DATA")
        await self._copy(stage, None, columns, rows, ready)
        return stage

    async def _upsert_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                            rows: Sequence[Sequence[Any]], key: list[str],
                            ready: frozenset[int] = frozenset()) -> WriteCounts:
        key = _named(key, columns)
        unique = await self._has_unique_index(table, schema, key)
        bare = [_TYPMOD.sub("", c.native_type) for c in columns]
        if unique and len(rows) <= _BOUND_ROWS and all(b.lower() in _BOUND_TYPES for b in bare):
            return await self._upsert_bound(table, schema, columns, bare, rows, key, ready)
        stage = await self._stage(table, schema, columns, rows, ready)
        return await self.merge_staged(table, schema, columns, stage, key, unique=unique)

    async def _upsert_bound(self, table: str, schema: str | None, columns: list[ColumnInfo], bare: list[str],
                            rows: Sequence[Sequence[Any]], key: list[str], ready: frozenset[int]) -> WriteCounts:
        """A few rows upserted by one statement, bound as parameters of the columns' types without modifiers (a cast
        to varchar(n) would cut a long value that the insert refuses), each encoded as COPY encodes it: a temporary
        table and a COPY would cost more than the rows (the engine's state row, say)."""
        converters = [None if i in ready else values.coercer(c.canonical) for i, c in enumerate(columns)]
        width = len(columns)
        tuples = ", ".join("(" + ", ".join(f"${r * width + i + 1}::{bare[i]}" for i in range(width)) + ")"
                           for r in range(len(rows)))
        bound = f"(VALUES {tuples}) AS _s({', '.join(_q(c.name) for c in columns)})"
        args = [v for row in values.convert_rows(rows, converters) for v in row]
        return await self._upsert_from(table, schema, columns, bound, key, *args)

    async def _upsert_from(self, table: str, schema: str | None, columns: list[ColumnInfo], rows: str,
                           key: list[str], *args: Any) -> WriteCounts:
        """``rows`` (a FROM item) upserted through the unique index on ``key`` (column names)."""
        inserted, updated = await self.conn.fetchrow(
            _conflict_upsert(self._target(table, schema), rows, [c.name for c in columns], key, _differs(columns)),
            *args)
        return WriteCounts(inserted=inserted, updated=updated)

    async def merge_staged(self, table: str, schema: str | None, columns: list[ColumnInfo], stage: str,
                           key: list[str], where: str | None = None, unique: bool | None = None) -> WriteCounts:
        """Upsert the rows of the temporary table ``stage`` (no key twice) into the table, then drop ``stage``; with
        ``where``, only the rows of ``stage`` it selects, and ``stage`` stays. ``unique``: whether the key has a
        unique index, when the caller knows."""
        target, key = self._target(table, schema), _named(key, columns)
        if unique is None:
            unique = await self._has_unique_index(table, schema, key)
        if unique:
            counts = await self._upsert_from(table, schema, columns,
                                             _q(stage) + (f" WHERE {where}" if where else ""), key)
            if not where:
                await self.conn.execute(f"DROP TABLE {_q(stage)}")
            return counts
        names = [c.name for c in columns]
        if where:  # the statements below join the staged rows by name: those rows on their own
            part = f"_odsync_stage_{next(_stage_ids)}"
            await self.conn.execute(f"CREATE TEMP TABLE {_q(part)} AS SELECT {', '.join(map(_q, names))} "
                                    f"FROM {_q(stage)} WHERE {where}")
            stage = part
        # no index to resolve conflicts with (a table made elsewhere): delete changed rows, insert missing
        delete, insert = merge_statements(target, _q(stage), names, key, _q, _differs(columns))
        updated = _count(await self.conn.execute(delete))
        inserted = _count(await self.conn.execute(insert)) - updated
        await self.conn.execute(f"DROP TABLE {_q(stage)}")
        return WriteCounts(inserted=inserted, updated=updated)

    async def _has_unique_index(self, table: str, schema: str | None, key: list[str]) -> bool:
        """Whether ``key`` (as the table spells it) has a unique index that ``ON CONFLICT`` can use (asked once
        per table and key: every batch's upsert and the state row's would ask again)."""
        fact = (schema, table, ("unique index", *key))
        if fact not in self._table_facts:
            self._table_facts[fact] = await self._unique_index_on(self._target(table, schema), key)
        return self._table_facts[fact]

    async def _unique_index_on(self, target: str, key: list[str]) -> bool:
        """Whether a plain unique index on exactly the ``key`` columns exists (``ON CONFLICT`` needs one)."""
        return bool(await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique "
            "AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnatts = $3 "
            "AND (SELECT array_agg(a.attname::text) FROM pg_attribute a WHERE a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey::int2[])) <@ $2::text[])", target, key, len(key)))

    async def _delete_keys(self, table: str, schema: str | None, key_columns: list[ColumnInfo],
                           keys: Sequence[Sequence[Any]]) -> int:
        if len(key_columns) == 1 and key_columns[0].native_type.lower() in INTEGER_TYPES and \
                all(type(k[0]) is int for k in keys):  # one statement, the keys bound as one array literal
            # (text, not bigint[]: the driver would first ask the server about bigint[], a round trip per connection)
            return _count(await self.conn.execute(
                f"DELETE FROM {self._target(table, schema)} WHERE {_q(key_columns[0].name)} = "
                f"ANY($1::text::bigint[])", "{" + ",".join(str(k[0]) for k in keys) + "}"))
        stage = await self._stage(table, schema, key_columns, keys)
        deleted = _count(await self.conn.execute(
            delete_statement(self._target(table, schema), _q(stage), [c.name for c in key_columns], _q)))
        await self.conn.execute(f"DROP TABLE {_q(stage)}")
        return deleted

    async def _drop_table(self, table: str, schema: str | None) -> None:
        await self.conn.execute(f"DROP TABLE IF EXISTS {self._target(table, schema)}")

    async def _truncate(self, table: str, schema: str | None) -> None:
        await self.conn.execute(f"TRUNCATE TABLE {self._target(table, schema)}")

    async def _rename_table(self, table: str, new_name: str, schema: str | None) -> None:
        await self.conn.execute(f"ALTER TABLE {self._target(table, schema)} RENAME TO {_q(new_name)}")

    async def _swap_tables(self, first: str, second: str, schema: str | None) -> None:
        spare = f"_odsync_swap_{next(_stage_ids)}"
        for old, new in ((first, spare), (second, first), (spare, second)):
            await self._rename_table(old, new, schema)

    async def _execute(self, sql: str, params: list[Any]) -> int:
        return _count(await self.conn.execute(sql, *params))

    # --- transactions -----------------------------------------------------------------------------------------------

    async def _begin(self) -> None:
        self._tx = self.conn.transaction()
        await self._tx.start()

    async def _begin_relaxed(self) -> None:
        await self._begin()
        await self.conn.execute("SET LOCAL synchronous_commit = off")

    async def _commit(self) -> None:
        tx, self._tx = self._tx, None
        await tx.commit()

    async def _rollback(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None and self._conn is not None and not self._conn.is_closed():
            await tx.rollback()


def _named(key: Sequence[str], columns: list[ColumnInfo]) -> list[str]:
    """Key columns as the table spells them (the caller's may differ in case)."""
    return [next(c.name for c in columns if c.name.lower() == k.lower()) for k in key]


async def close_all(connections: Iterable[asyncpg.Connection], cut_short: Container[asyncpg.Connection] = ()
                    ) -> None:
    """Close connections a pipe opened; one whose COPY was cut short (in ``cut_short``) or that broke is dropped at
    once, and the server rolls its transaction back."""
    for conn in connections:
        if conn in cut_short or conn.is_closed():
            conn.terminate()
            continue
        try:
            await conn.close(timeout=5)
        except Exception:
            conn.terminate()


def _count(status: str) -> int:
    """The row count of a command status such as ``INSERT 0 5`` or ``DELETE 3`` (0 when there is none)."""
    last = (status or "").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
