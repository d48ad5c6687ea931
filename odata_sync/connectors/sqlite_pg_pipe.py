"""SQLite → PostgreSQL pass-through: SQLite itself renders the rows in PostgreSQL's COPY text format (``group_concat``
makes one string of a few thousand rows) and that text goes to ``COPY … FROM STDIN`` untouched, so the rows never
become Python values.

Each value lands exactly as the normal path stores it (the SQLite reader's coercion, then the PostgreSQL writer's,
then asyncpg's binary encoding). A value already in a form whose PostgreSQL text input gives that same result (checked
in SQL: the storage class by comparisons, timestamps by ``GLOB`` and ``julianday``, decimals of a fixed scale by exact
arithmetic) is written as SQLite has it; any other goes through a SQL function that applies the normal path's own
converters and renders the result. Escaping text in SQL would cost more than all the rest, so a block is rendered
without it and checked in Python (only the expected tabs, newlines and ``\\N`` backslashes): one that holds a special
character is rendered again with ``replace()`` escaping. Rowid tables are cut into rowid ranges, one destination
transaction each, all read in one snapshot: by the source's connection, and without WAL also by a second connection
whose read begins while the first holds the file's shared lock (two renderers, two COPY connections); other tables
and views go as one chunk. The check column's highest value is taken per rendered block, so no extra scan finds it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg

from odata_sync.errors import BadRequest

from . import values
from .base import ColumnInfo
from .passthrough import Pipe, Transfer, in_parallel
from .postgresql import PostgreSQLConnector, _count, close_all
from .sqlite import SQLiteConnector, _q
from .sqlite_pipe import as_read, highest, rowid_ranges
from .threads import ConnectionThread
from .types import _split

#: Rows per string SQLite renders: Python handles one object per block, and a chunk's COPY starts after one block.
BLOCK_ROWS = 8192
#: Connections rendering at once (each with its COPY): SQLite's allocator lock keeps two threads from doubling the
#: speed, yet the second uses the time the first waits for PostgreSQL.
READERS = 2
#: PostgreSQL column types whose text input is known here (``real`` is not: its text input rounds differently).
_PG_TYPES = frozenset({
    "smallint", "integer", "bigint", "numeric", "double precision", "boolean", "text", "character varying",
    "character", "date", "time without time zone", "timestamp without time zone", "timestamp with time zone", "uuid",
    "json", "jsonb", "bytea"})
_INTS, _TEXTS = frozenset({"int16", "int32", "int64"}), frozenset({"string", "text", "json"})
_D = "?" * 4 + "-??-??"  # GLOB shapes; julianday() then checks that the digits are digits
_HMS = ("[01]?:??:??", "2[0-3]:??:??")  # hour 24 is PostgreSQL's, not Python's
_HEX = "[0-9a-fA-F]"


def _render(kind: str) -> Callable[[Any], str]:
    """Canonical value -> the PostgreSQL text input giving what asyncpg's binary encoding of it gives."""
    if kind in _INTS:
        return str
    if kind == "decimal":
        return lambda v: ("NaN" if v.is_nan() else ("-Infinity" if v < 0 else "Infinity") if v.is_infinite()
                          else format(v, "f"))
    if kind == "float64":
        return lambda v: ("NaN" if math.isnan(v) else ("-Infinity" if v < 0 else "Infinity") if math.isinf(v)
                          else repr(v))
    if kind == "boolean":
        return lambda v: "t" if v else "f"
    if kind == "time":
        return lambda v: v.replace(tzinfo=None).isoformat()
    if kind in ("timestamp", "timestamptz", "date"):  # asyncpg sends the extreme Python values as infinities
        low, high = (dt.date.min, dt.date.max) if kind == "date" else (dt.datetime.min, dt.datetime.max)
        naive = (lambda v: v.astimezone(dt.UTC).replace(tzinfo=None)) if kind == "timestamptz" else (lambda v: v)
        return lambda v: ("-infinity" if naive(v) == low else "infinity" if naive(v) == high
                          else v.isoformat(sep=" ") if kind != "date" else v.isoformat())
    if kind == "binary":
        return lambda v: "\\x" + v.hex()
    return str  # strings, JSON text, uuid


def _globs(x: str, shapes: list[str]) -> str:
    """``x`` has one of these shapes, and no byte after them (GLOB, julianday and printf stop at a NUL)."""
    lengths = ", ".join(sorted({str(len(re.sub(r"\[.*?\]", "?", shape))) for shape in shapes}))
    return f"length(CAST({x} AS BLOB)) IN ({lengths}) AND (" + " OR ".join(f"{x} GLOB '{shape}'" for shape in shapes) + ")"


def _fast(x: str, theirs: str, ours: ColumnInfo) -> tuple[str, str] | None:
    """(condition, expression): the values of column ``x`` that SQL renders itself, and how; None: all go through
    the function."""
    kind, scale = ours.canonical.kind, ours.canonical.scale or 0
    if kind in _INTS and theirs in _INTS:  # INTEGER affinity: only non-integral or huge REALs, text, blobs differ
        return f"{x} = CAST({x} AS INTEGER)", f"CAST({x} AS INTEGER)"
    if kind == "boolean" and (theirs == "boolean" or theirs in _INTS):
        return f"{x} IN (0, 1)", f"iif({x}, 't', 'f')"
    if kind in _TEXTS and theirs in _TEXTS:  # text sorts after numbers and before blobs; printf stops at a NUL
        return f"+{x} >= '' AND +{x} < X'' AND instr({x}, char(0)) = 0", x
    if kind == "decimal" and ours.canonical.precision is not None and scale <= 12 \
            and (theirs in ("decimal", "float64") or theirs in _INTS):
        # k / 10^s is one exact IEEE division (k < 2^53), so a REAL equal to it is that decimal's double, and the
        # shortest repr the normal path takes rounds to it at scale s (|x| < 10^(15-s)); a decimal text equal to
        # SQLite's rendering of it has that value too
        k, div = f"round({x} * 1e{scale})", f"1e{scale}"
        return (f"abs({x}) < 1e{15 - scale} AND ({k} / {div} = {x} OR printf('%.{scale}f', {k} / {div}) = {x})",
                f"CAST({k} AS INTEGER) || 'e-{scale}'")
    years = f"+{x} >= '0002' AND +{x} < '9999' AND "  # (unary + : compared as stored) years 1 and 9999 may be infinite
    if kind in ("timestamp", "timestamptz") and theirs in ("timestamp", "timestamptz", "text", "string"):
        shapes = [f"{_D} {hms}{fraction}" for fraction in ("", ".??????") for hms in _HMS]
        if kind == "timestamptz":  # no offset means UTC to the normal path; the SQLite writer's form has +00:00
            shapes += [f"{_D} {hms}.??????+00:00" for hms in _HMS]
            return (f"{years}{_globs(x, shapes)} AND julianday({x}) IS NOT NULL",
                    f"iif(length({x}) > 26, {x}, {x} || '+00')")
        return f"{years}{_globs(x, shapes)} AND julianday({x}) IS NOT NULL", x
    if kind == "date" and theirs in ("date", "text", "string"):
        return f"{years}{_globs(x, [_D])} AND julianday({x}) IS NOT NULL", x
    if kind == "time" and theirs in ("time", "text", "string"):
        shapes = [f"{hms}{fraction}" for fraction in ("", ".??????") for hms in _HMS]
        return f"{_globs(x, shapes)} AND julianday({x}) IS NOT NULL", x
    if kind == "uuid" and theirs in ("uuid", "text", "string"):
        return _globs(x, [f"{_HEX * 8}-{_HEX * 4}-{_HEX * 4}-{_HEX * 4}-{_HEX * 12}"]), x
    if kind == "binary" and theirs == "binary":
        return f"{x} >= X''", f"'\\x' || hex({x})"
    return None


def _escaped(expression: str) -> str:
    """COPY text escaping of a text expression: backslash, tab, newline, carriage return."""
    for char, escape in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        expression = f"replace({expression}, '{char}', '{escape}')"
    return expression


def text_copy_pipe(source: SQLiteConnector, destination: PostgreSQLConnector, transfer: Transfer) -> Pipe | None:
    """The pipe for ``transfer`` (not started), or None when a destination column's type is not one whose text
    input is known here (``real``, arrays, domains, extension types)."""
    if any(_split(c.native_type)[3] not in _PG_TYPES or c.native_type.rstrip().endswith("]")
           for c in transfer.columns):
        return None
    return _TextCopyPipe(source, destination, transfer)


class _TextCopyPipe(Pipe):
    def __init__(self, source: SQLiteConnector, destination: PostgreSQLConnector, transfer: Transfer) -> None:
        self.source, self.destination, self.transfer = source, destination, transfer
        self._from = source._target(transfer.source_table, transfer.source_schema)
        self._functions: dict[str, Callable[[Any], Any]] = {}
        self._error: Exception | None = None  # what a conversion function raised (SQLite only says that one did)
        self._registered = self._began = False
        self._ranges: list[tuple[int | None, int | None]] = []
        self._readers: list[_Reader] = []
        self._writers: list[asyncpg.Connection] = []
        self._busy: set[asyncpg.Connection] = set()  # writers with a COPY in flight: terminated on close
        self._blob = True  # the database is UTF-8: its text is the bytes COPY wants
        # each rendered block's highest check value (when the check column is copied), complete once every chunk is
        self._maxima: list[Any] | None = [] if transfer.check_copied else None
        self._complete = False
        pairs = list(zip(transfer.source_columns, transfer.columns, strict=True))
        # binary values render with a backslash, so every block would fail the fast check: escape from the start
        self._fast = all(ours.canonical.kind != "binary" for _theirs, ours in pairs)
        fast = [self._column(i, theirs, ours, escape=False) for i, (theirs, ours) in enumerate(pairs)]
        safe = [self._column(i, theirs, ours, escape=True) for i, (theirs, ours) in enumerate(pairs)]
        # the NULLs of the columns that may hold them (a NULL elsewhere fails the block's check: it is escaped)
        self._nulls = " + ".join([f"({_q(theirs.name)} IS NULL)" for theirs, _ours in pairs if theirs.nullable] or ["0"])
        # one printf per row: far cheaper than || (every || copies); it stops at a NUL, which no value has here
        fields = "\t".join(["%s"] * len(pairs))
        self._rows = {False: f"printf('{fields}', {', '.join(fast)})", True: f"printf('{fields}', {', '.join(safe)})"}

    def _column(self, index: int, theirs: ColumnInfo, ours: ColumnInfo, *, escape: bool) -> str:
        """The SQL rendering column ``theirs`` as the normal path stores it in ``ours``: ``\\N`` for NULL, the SQL
        fast path for values already in shape, else the conversion function."""
        x, name = _q(theirs.name), f"_odsync_pg_{index}"
        if name not in self._functions:
            self._functions[name] = self._converter(theirs, ours)
        found = _fast(x, theirs.canonical.kind, ours)
        slow = _escaped(f"{name}({x})") if escape else f"{name}({x})"
        if found is None:
            return f"CASE WHEN {x} IS NULL THEN '\\N' ELSE {slow} END"
        condition, output = found
        return f"CASE WHEN {x} IS NULL THEN '\\N' WHEN {condition} THEN " \
               f"{_escaped(output) if escape else output} ELSE {slow} END"

    def _converter(self, theirs: ColumnInfo, ours: ColumnInfo) -> Callable[[Any], Any]:
        """The normal path's converters for one column (reader, then writer unless it takes the value as is), then
        the text form; an error is kept to be raised instead of SQLite's generic one."""
        read = values.coercer(theirs.canonical)
        write = None if values.passes_as_is(theirs.canonical, ours.canonical) else values.coercer(ours.canonical)
        steps = [(step, getattr(step, "exact", None)) for step in (read, write) if step is not None]
        render = _render(ours.canonical.kind)

        def convert(value: Any) -> Any:
            try:
                for step, exact in steps:
                    if type(value) is not exact:
                        value = step(value)
                text = render(value)
                if "\x00" in text:  # PostgreSQL refuses it in text; printf would cut the value short
                    raise BadRequest('PostgreSQL: invalid byte sequence for encoding "UTF8": 0x00')
                return text
            except Exception as exc:
                self._error = exc
                raise
        return convert

    async def start(self) -> None:
        chunk = self.transfer.chunk_rows

        def begin() -> tuple[list[tuple[int | None, int | None]], bool]:
            conn = self.source.conn
            self._register(conn)
            self._registered = True
            self._blob = conn.execute("PRAGMA encoding").fetchone()[0] == "UTF-8"
            conn.execute("BEGIN")  # one snapshot for every chunk and the highest check value
            self._began = True
            ranges = rowid_ranges(conn, self._from, chunk)
            return ranges, conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal"

        async with self.source._guard(f"starting to read {self.transfer.source_table}"):
            self._ranges, shared_lock = await self.source._run(begin)
        if self._ranges == [(None, None)]:
            self._maxima = None  # (no rowids: rows are rendered one by one, not in blocks)
        self._readers = [_Reader(self.source.conn, self.source._run)]
        if READERS > 1 and shared_lock and len(self._ranges) > 1 and not self.source.memory \
                and self.transfer.source_schema in (None, "main"):
            async with self.source._guard(f"starting to read {self.transfer.source_table}"):
                if (other := await self._another_reader()) is not None:
                    self._readers.append(other)
        async with self.destination._guard(f"starting to copy into {self.transfer.table}"):
            for _ in self._readers:  # chunk commits need not wait for the disk: the load's final commit does
                self._writers.append(await self.destination.connect_another(synchronous_commit="off"))
        self.description = (f"COPY text rendered by SQLite, {len(self._ranges)} chunk(s) on "
                            f"{len(self._readers)} connection pair(s)" + ("" if self._fast else ", escaped in SQL"))

    def _register(self, conn: sqlite3.Connection) -> None:
        for name, function in self._functions.items():
            conn.create_function(name, 1, function, deterministic=True)

    async def _another_reader(self) -> _Reader | None:
        """A second connection rendering rows on a thread of its own, in the same snapshot: the first connection's
        read transaction holds the file's shared lock, so no writer can commit until both have begun (without WAL).
        None when a writer already waits for that lock: waiting here would deadlock with it."""
        thread = ConnectionThread("odsync-sqlite-read")

        def connect() -> sqlite3.Connection | None:
            conn = sqlite3.connect(self.source.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=0,
                                   isolation_level=None, check_same_thread=False)
            try:
                self._register(conn)
                conn.execute("BEGIN")
                conn.execute(f"SELECT 1 FROM {self._from} LIMIT 1").fetchall()
            except sqlite3.OperationalError:
                conn.close()
                return None
            thread.interrupt = conn.interrupt
            return conn

        conn = await thread.run(connect)
        if conn is None:
            thread.shutdown()
            return None
        return _Reader(conn, thread.run, thread)

    async def highest(self, column: str) -> Any:
        if column == self.transfer.check and self._maxima is not None and self._complete:
            maxima = self._maxima

            def fold() -> Any:  # SQLite compares, as max() over the column does
                found = maxima
                while len(found) > 1:
                    found = [self.source.conn.execute(
                        "SELECT max(column1) FROM (VALUES " + ", ".join(["(?)"] * len(part)) + ")", part
                    ).fetchone()[0] for part in (found[i:i + 500] for i in range(0, len(found), 500))]
                return found[0] if found else None
            async with self.source._guard(f"reading the highest {column}"):
                return as_read(self.transfer, column, await self.source._run(fold))
        return await highest(self.source, self._from, self.transfer, column)

    # --- rendering (on the readers' threads) ------------------------------------------------------------------------

    def _select(self, safe: bool, bounds: str) -> str:
        text = f"group_concat({self._rows[safe]}, '\n')"
        highest = f", max({_q(self.transfer.check)})" if self._maxima is not None else ""
        return f"SELECT {f'CAST({text} AS BLOB)' if self._blob else text}, count(*), sum({self._nulls}){highest} " \
               f"FROM {self._from}{bounds}"

    def _block(self, conn: sqlite3.Connection, low: int, high: int | None) -> tuple[bytes, int]:
        """One rowid range rendered: fast, and again escaped in SQL when its text holds a special character."""
        bounds = f" WHERE _rowid_ >= {int(low)}" + (f" AND _rowid_ < {int(high)}" if high is not None else "")
        data, rows, nulls, *most = self._sqlite(lambda: conn.execute(self._select(not self._fast, bounds)).fetchone())
        if not rows:
            return b"", 0
        if self._maxima is not None:
            self._maxima.append(most[0])
        data = data if self._blob else data.encode()
        if self._fast and not (data.count(b"\\") == nulls and b"\r" not in data and data.count(b"\n") == rows - 1
                               and data.count(b"\t") == rows * (len(self.transfer.columns) - 1)):
            data = self._sqlite(lambda: conn.execute(self._select(True, bounds)).fetchone()[0])
            data = data if self._blob else data.encode()
        return data + b"\n", rows

    def _rows_of(self, cursor: sqlite3.Cursor) -> tuple[bytes, int]:
        """The next rows of a table without rowids (escaped in SQL, one row at a time: few tables are like that)."""
        rows = self._sqlite(cursor.fetchmany, BLOCK_ROWS)
        return "".join(row[0] + "\n" for row in rows).encode(), len(rows)

    def _sqlite(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` raising what a conversion function raised rather than SQLite's generic error about it."""
        try:
            return fn(*args)
        except sqlite3.Error:
            error, self._error = self._error, None
            if error is not None:
                raise error from None
            raise

    async def _blocks(self, reader: _Reader, low: int | None, high: int | None) -> AsyncIterator[bytes]:
        """One chunk's text, block by block; the reader's thread renders the next block while this one is sent."""
        if low is None:
            sql = f"SELECT {self._rows[True]} FROM {self._from}"
            async with self.source._guard(f"reading {self.transfer.source_table}"):
                cursor = await reader.run(self._sqlite, reader.conn.execute, sql)
            while True:
                async with self.source._guard(f"reading {self.transfer.source_table}"):
                    data, rows = await reader.run(self._rows_of, cursor)
                if not rows:
                    return
                yield data
        stops = list(range(low + BLOCK_ROWS, high, BLOCK_ROWS)) if high is not None else []
        bounds = list(zip([low, *stops], [*stops, high], strict=True))
        pending: list[asyncio.Future] = []
        try:  # one block rendered ahead (calls queued on one thread run in order)
            while bounds or pending:
                while bounds and len(pending) < 2:
                    pending.append(asyncio.ensure_future(reader.run(self._block, reader.conn, *bounds.pop(0))))
                async with self.source._guard(f"reading {self.transfer.source_table}"):
                    data, rows = await pending.pop(0)
                if rows:
                    yield data
        finally:
            for block in pending:
                block.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- writing ----------------------------------------------------------------------------------------------------

    async def chunks(self) -> AsyncIterator[int]:
        pairs = list(zip(self._readers, self._writers, strict=True))
        async for rows in in_parallel(pairs, self._ranges, self._copy):
            yield rows
        self._complete = True

    async def _copy(self, pair: tuple[_Reader, asyncpg.Connection], bounds: tuple[int | None, int | None]) -> int:
        """One chunk, rendered by the pair's reader, in one transaction of its writer."""
        (reader, writer), t = pair, self.transfer
        self._busy.add(writer)
        async with self.destination._guard(f"copying into {t.table}"), writer.transaction():
            status = await writer.copy_to_table(t.table, source=self._blocks(reader, *bounds),
                                                columns=[c.name for c in t.columns], schema_name=t.schema,
                                                format="text")
        self._busy.discard(writer)
        return _count(status)

    async def close(self) -> None:
        writers, self._writers = self._writers, []
        await close_all(writers, self._busy)
        self._busy.clear()
        others, self._readers = self._readers[1:], []
        for reader in others:
            with suppress(Exception):
                await reader.run(reader.conn.close)  # (a read transaction: nothing to keep)
            if reader.thread is not None:
                reader.thread.shutdown()
        began, registered, self._began, self._registered = self._began, self._registered, False, False
        if not (began or registered):
            return

        def end() -> None:
            conn = self.source._conn
            if conn is None:
                return
            if began and conn.in_transaction:
                conn.execute("ROLLBACK")  # read only: nothing to keep
            for name in self._functions if registered else ():
                conn.create_function(name, 1, None)
        async with self.source._guard("ending the read"):
            await self.source._run(end)


@dataclass(frozen=True)
class _Reader:
    """A SQLite connection rendering chunks and how to run a call on its thread (``thread``: one of its own)."""

    conn: sqlite3.Connection
    run: Callable[..., Awaitable[Any]]
    thread: ConnectionThread | None = None
