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
transaction each, all read in one source transaction (one snapshot); other tables and views go as one chunk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

import asyncpg

from odata_sync.errors import BadRequest

from . import values
from .base import ColumnInfo
from .passthrough import Pipe, Transfer
from .postgresql import PostgreSQLConnector, _count
from .sqlite import SQLiteConnector, _q
from .sqlite_pipe import highest, rowid_ranges
from .types import _split

#: Rows per string SQLite renders: Python handles one object per block, and a chunk's COPY starts after one block.
BLOCK_ROWS = 8192
#: PostgreSQL column types whose text input is known here (``real`` is not: its text input rounds differently).
_PG_TYPES = frozenset({
    "smallint", "integer", "bigint", "numeric", "double precision", "boolean", "text", "character varying",
    "character", "date", "time without time zone", "timestamp without time zone", "timestamp with time zone", "uuid",
    "json", "jsonb", "bytea"})
_INTS, _TEXTS = frozenset({"int16", "int32", "int64"}), frozenset({"string", "text", "json"})
_END = object()
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
        self._writer: asyncpg.Connection | None = None
        self._busy = False  # a COPY is in flight on the writer: terminated on close
        self._producer: asyncio.Task | None = None
        self._blob = True  # the database is UTF-8: its text is the bytes COPY wants
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

        def begin() -> list[tuple[int | None, int | None]]:
            conn = self.source.conn
            for name, function in self._functions.items():
                conn.create_function(name, 1, function, deterministic=True)
            self._registered = True
            self._blob = conn.execute("PRAGMA encoding").fetchone()[0] == "UTF-8"
            conn.execute("BEGIN")  # one snapshot for every chunk and the highest check value
            self._began = True
            return rowid_ranges(conn, self._from, chunk)

        async with self.source._guard(f"starting to read {self.transfer.source_table}"):
            self._ranges = await self.source._run(begin)
        async with self.destination._guard(f"starting to copy into {self.transfer.table}"):
            # chunk commits need not wait for the disk: the load's final commit does
            self._writer = await self.destination.connect_another(synchronous_commit="off")
        self.description = (f"COPY text rendered by SQLite, {len(self._ranges)} chunk(s)"
                            + ("" if self._fast else ", escaped in SQL"))

    async def highest(self, column: str) -> Any:
        return await highest(self.source, self._from, self.transfer, column)

    # --- rendering (on the SQLite thread) ---------------------------------------------------------------------------

    def _select(self, safe: bool, bounds: str) -> str:
        text = f"group_concat({self._rows[safe]}, '\n')"
        return f"SELECT {f'CAST({text} AS BLOB)' if self._blob else text}, count(*), sum({self._nulls}) " \
               f"FROM {self._from}{bounds}"

    def _block(self, low: int, high: int | None) -> tuple[bytes, int]:
        """One rowid range rendered: fast, and again escaped in SQL when its text holds a special character."""
        bounds = f" WHERE _rowid_ >= {int(low)}" + (f" AND _rowid_ < {int(high)}" if high is not None else "")
        data, rows, nulls = self._sqlite(lambda: self.source.conn.execute(self._select(not self._fast, bounds))
                                         .fetchone())
        if not rows:
            return b"", 0
        data = data if self._blob else data.encode()
        if self._fast and not (data.count(b"\\") == nulls and b"\r" not in data and data.count(b"\n") == rows - 1
                               and data.count(b"\t") == rows * (len(self.transfer.columns) - 1)):
            data = self._sqlite(lambda: self.source.conn.execute(self._select(True, bounds)).fetchone()[0])
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

    async def _produce(self, queue: asyncio.Queue) -> None:
        """Render every chunk block by block, ahead of the COPY (the SQLite thread works while PostgreSQL does)."""
        try:
            for low, high in self._ranges:
                if low is None:
                    sql = f"SELECT {self._rows[True]} FROM {self._from}"
                    async with self.source._guard(f"reading {self.transfer.source_table}"):
                        cursor = await self.source._run(self._sqlite, self.source.conn.execute, sql)
                    while True:
                        async with self.source._guard(f"reading {self.transfer.source_table}"):
                            block = await self.source._run(self._rows_of, cursor)
                        if not block[1]:
                            break
                        await queue.put(block)
                else:
                    stops = list(range(low + BLOCK_ROWS, high, BLOCK_ROWS)) if high is not None else []
                    for start, stop in zip([low, *stops], [*stops, high], strict=True):
                        async with self.source._guard(f"reading {self.transfer.source_table}"):
                            block = await self.source._run(self._block, start, stop)
                        await queue.put(block)
                await queue.put(_END)
        except BaseException as exc:
            await queue.put(exc)
            raise

    # --- writing ----------------------------------------------------------------------------------------------------

    async def chunks(self) -> AsyncIterator[int]:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
        self._producer = asyncio.create_task(self._produce(queue))
        t, writer = self.transfer, self._writer
        assert writer is not None

        async def feed() -> AsyncIterator[bytes]:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item  # the COPY fails, so the chunk's transaction rolls back
                if item[1]:
                    yield item[0]

        for _ in self._ranges:
            self._busy = True
            async with self.destination._guard(f"copying into {t.table}"), writer.transaction():
                status = await writer.copy_to_table(t.table, source=feed(), columns=[c.name for c in t.columns],
                                                    schema_name=t.schema, format="text")
            self._busy = False
            yield _count(status)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.cancel()
            with suppress(BaseException):
                await producer
        writer, self._writer = self._writer, None
        if writer is not None:
            if self._busy or writer.is_closed():
                writer.terminate()  # a COPY was cut short: the server rolls its transaction back
            else:
                try:
                    await writer.close(timeout=5)
                except Exception:
                    writer.terminate()
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
