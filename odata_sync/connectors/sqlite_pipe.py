"""SQLite → SQLite pass-through: the source file is attached (read-only) to the destination's connection and each
chunk is one ``INSERT … SELECT`` that SQLite runs on its own, rows never leaving the library.

Each value is stored exactly as the normal path would store it (decimals as exact text, timestamps as ISO text with
microseconds, booleans as 0/1), so later upserts see equal rows as equal: values already in that form (checked in
SQL: ``typeof`` and a ``GLOB`` pattern) are copied as they are, any other goes through a SQL function that applies the
normal path's own converters. Rowid tables are cut into rowid ranges, one destination transaction each; other tables
and views go as one statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import values
from .base import ColumnInfo
from .passthrough import Pipe, Transfer
from .sqlite import SQLiteConnector, _q, encoders

_ALIAS = "_odsync_source"
_STORAGE = {int: "integer", float: "real", str: "text", bytes: "blob"}
_DIGITS = "[0-9]"
_TIMESTAMP = f"{_DIGITS * 4}-{_DIGITS * 2}-{_DIGITS * 2} {_DIGITS * 2}:{_DIGITS * 2}:{_DIGITS * 2}"


def attach_pipe(source: SQLiteConnector, destination: SQLiteConnector, transfer: Transfer) -> Pipe | None:
    """The pipe for ``transfer`` (not started), or None (an in-memory or attached-schema source, or the same file on
    both sides)."""
    if source.memory or destination.memory or transfer.source_schema not in (None, "main"):
        return None
    if source.path.resolve() == destination.path.resolve():
        return None
    return _AttachPipe(source, destination, transfer)


def rowid_ranges(conn: sqlite3.Connection, table: str, chunk: int) -> list[tuple[int | None, int | None]]:
    """``table`` cut into rowid ranges of ``chunk`` rowids (the last open-ended); one open range for a table without
    rowids or a view, none for an empty table."""
    try:
        # two subqueries: SQLite reads a lone min() or max() of the rowid from the b-tree's ends, both together scan
        low, high = conn.execute(f"SELECT (SELECT min(_rowid_) FROM {table}), (SELECT max(_rowid_) FROM {table})"
                                 ).fetchone()
    except sqlite3.OperationalError:  # WITHOUT ROWID tables and views have no rowid
        return [(None, None)]
    if low is None:
        return []
    starts = list(range(low, high + 1, chunk))
    return [(start, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]


async def highest(connector: SQLiteConnector, table: str, transfer: Transfer, column: str) -> Any:
    """The highest value of a source column of ``table`` (read on ``connector``), as the normal path reads it."""
    sql = f"SELECT max({_q(column)}) FROM {table}"
    async with connector._guard(f"reading the highest {column}"):
        raw = (await connector._run(lambda: connector.conn.execute(sql).fetchone()))[0]
    return as_read(transfer, column, raw)


def as_read(transfer: Transfer, column: str, raw: Any) -> Any:
    """A value of a source column as SQLite stores it -> as the normal path reads it."""
    found = next((c for c in transfer.source_columns if c.name == column), None)
    coerce = values.coercer(found.canonical) if found is not None and raw is not None else None
    return coerce(raw) if coerce else raw


class _AttachPipe(Pipe):
    def __init__(self, source: SQLiteConnector, destination: SQLiteConnector, transfer: Transfer) -> None:
        self.source, self.destination, self.transfer = source, destination, transfer
        self._from = f"{_ALIAS}.{_q(transfer.source_table)}"
        self._attached = False
        self._ranges: list[tuple[int | None, int | None]] = []
        self._functions: dict[str, Callable[[Any], Any]] = {}
        self._error: Exception | None = None  # what a conversion function raised (SQLite only says that one did)
        self._select = ", ".join(self._expression(i, theirs, ours) for i, (theirs, ours)
                                 in enumerate(zip(transfer.source_columns, transfer.columns, strict=True)))

    def _expression(self, index: int, theirs: ColumnInfo, ours: ColumnInfo) -> str:
        """How column ``theirs`` is selected so that it is stored in ``ours`` as the normal path stores it."""
        read = values.coercer(theirs.canonical)  # as the SQLite reader converts
        write = encoders([ours])[0]  # as the SQLite writer converts
        steps = [(step, getattr(step, "exact", None)) for step in (read, write) if step is not None]

        def normalize(value: Any) -> Any:
            try:
                for step, exact in steps:
                    if value is not None and type(value) is not exact:
                        value = step(value)
            except Exception as exc:
                self._error = exc
                raise
            return value

        name, column = f"_odsync_normalize_{index}", _q(theirs.name)
        self._functions[name] = normalize
        exacts = {exact for _step, exact in steps}
        if len(exacts) == 1 and len(steps) == 2 and (storage := _STORAGE.get(exacts.pop())):
            return f"CASE WHEN typeof({column}) IN ('{storage}', 'null') THEN {column} ELSE {name}({column}) END"
        kind = ours.canonical.kind
        if kind == "boolean" and theirs.canonical.kind in ("boolean", "int16", "int32", "int64"):
            return f"CASE WHEN {column} IS NULL OR {column} IN (0, 1) AND typeof({column}) = 'integer' " \
                   f"THEN {column} ELSE {name}({column}) END"
        if kind == "decimal" and theirs.canonical.kind in ("decimal", "float64"):
            # an integer's digits; a REAL whose SQLite text has at most 15 characters (no exponent in this range)
            # and reads back as the same double is Python's shortest repr too (both are the double's nearest
            # 15-digit decimal), which the normal path writes; anything else is converted by the function
            text = f"CAST({column} AS TEXT)"
            return (f"CASE WHEN {column} IS NULL THEN NULL WHEN typeof({column}) = 'integer' THEN {text} "
                    f"WHEN typeof({column}) = 'real' AND abs({column}) >= 0.0001 AND abs({column}) < 1e15 "
                    f"AND length({text}) <= 15 AND CAST({text} AS REAL) = {column} THEN {text} "
                    f"ELSE {name}({column}) END")
        if kind == "timestamp" and theirs.canonical.kind in ("timestamp", "text", "string"):
            return (f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} GLOB '{_TIMESTAMP}' THEN {column} || '.000000' "
                    f"WHEN {column} GLOB '{_TIMESTAMP}.{_DIGITS * 6}' THEN {column} ELSE {name}({column}) END")
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE {name}({column}) END"

    async def start(self) -> None:
        uri = self.source.path.resolve().as_uri() + "?mode=ro"
        chunk = self.transfer.chunk_rows

        def attach() -> list[tuple[int | None, int | None]]:
            self.destination.conn.execute(f"ATTACH DATABASE ? AS {_ALIAS}", (uri,))
            self._attached = True
            for name, function in self._functions.items():
                self.destination.conn.create_function(name, 1, function, deterministic=True)
            return rowid_ranges(self.destination.conn, self._from, chunk)

        async with self.destination._guard(f"attaching {self.source.path}"):
            await self.destination._open_for_write()
            self._ranges = await self.destination._run(attach)
        self.description = f"INSERT ... SELECT from the attached source file, {len(self._ranges)} chunk(s)"
        if self.transfer.check_copied:
            await self._highest_meanwhile(self.transfer.check)

    async def _highest_meanwhile(self, column: str) -> None:
        """Find the check column's highest value on the source's own connection while the chunks are copied, in a
        read transaction begun before them (so no row a chunk reads is newer than the mark)."""
        conn, table = self.source.conn, _q(self.transfer.source_table)

        def begin() -> None:
            conn.execute("BEGIN")
            try:
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()  # the snapshot starts at the first read
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        def read() -> Any:
            try:
                return conn.execute(f"SELECT max({_q(column)}) FROM {table}").fetchone()[0]
            finally:
                conn.execute("ROLLBACK")  # read only; a writer may go on

        async with self.source._guard(f"reading the highest {column}"):
            await self.source._run(begin)
        self._read_meanwhile(self.source._run(read))

    async def highest(self, column: str) -> Any:
        if (found := self._found_meanwhile(column)) is not None:
            async with self.source._guard(f"reading the highest {column}"):
                return as_read(self.transfer, column, await found)
        return await highest(self.destination, self._from, self.transfer, column)

    async def chunks(self) -> AsyncIterator[int]:
        t = self.transfer
        insert = (f"INSERT INTO {self.destination._target(t.table, t.schema)} "
                  f"({', '.join(_q(c.name) for c in t.columns)}) "
                  f"SELECT {self._select} FROM {self._from}")
        while self._ranges:
            low, high = self._ranges.pop(0)
            bounds = ([f"_rowid_ >= {int(low)}"] if low is not None else []) + \
                     ([f"_rowid_ < {int(high)}"] if high is not None else [])
            sql = insert + (f" WHERE {' AND '.join(bounds)}" if bounds else "")
            async with self.destination._guard(f"copying into {t.table}"):
                count = await self.destination._run(self._copy, sql)
            yield count

    def _copy(self, sql: str) -> int:
        conn = self.destination.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            count = conn.execute(sql).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            error, self._error = self._error, None
            if error is not None:
                raise error from None
            raise
        conn.execute("COMMIT")
        return count

    async def close(self) -> None:
        await self._stop_meanwhile()  # (the read ends its transaction however it ends)
        if not self._attached:
            return
        self._attached = False

        def detach() -> None:
            if self.destination._conn is not None:
                if self.destination._conn.in_transaction:  # a chunk interrupted by a cancel
                    self.destination._conn.execute("ROLLBACK")
                self.destination._conn.execute(f"DETACH DATABASE {_ALIAS}")
                for name in self._functions:
                    self.destination._conn.create_function(name, 1, None)
        async with self.destination._guard("detaching the source"):
            await self.destination._run(detach)
