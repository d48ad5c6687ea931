"""PostgreSQL → SQLite pass-through: PostgreSQL renders each value as the text the normal path would store, COPY
streams it out, Python only splits the lines and SQLite inserts the fields, so no value becomes a Python object of
its type on the way (the normal path decodes, converts and binds each one).

Each column is rendered in SQL exactly as the normal path stores it (the PostgreSQL reader's value, then the SQLite
writer's encoder): decimals as their exact text, timestamps as ISO text with microseconds (time-zone values in UTC
with ``+00:00``), booleans as 0/1; a date or time Python cannot hold fails the load as it fails there. Doubles and
bytea come as hex and are bound as Python floats and bytes (SQLite's text-to-double conversion is not exact). A
column whose value the destination would convert between two kinds means no pipe. COPY writes NULL as a lone vertical
tab, which it always escapes inside a value; a piece of text holding no backslash (no escape) is split and bound as
it is, NULLs turned into NULL by SQLite; one holding an escape is unescaped field by field in Python. The table is
one COPY in one snapshot (the check column's highest value read meanwhile on another connection); every
``chunk_rows`` rows are one destination transaction (exact batches, as the normal path commits), committed while the
next rows stream in.
"""

from __future__ import annotations

import array
import asyncio
import re
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from odata_sync.concurrency import stop_tasks
from odata_sync.errors import BadRequest

from . import values
from .base import ColumnInfo
from .passthrough import Pipe, Transfer
from .postgresql import PostgreSQLConnector, _q, _read_converter, _select_expr, close_all
from .sqlite import SQLiteConnector
from .sqlite import _q as _sq
from .types import _split

#: Bytes of COPY text split at once: small enough that every buffer on the way (joined, decoded, split) is reused
#: from the allocator's free lists instead of being mapped fresh (page faults cost more than the split).
PIECE_BYTES = 1 << 16
#: Rows per INSERT statement (at most): fewer statements to step and reset, a quarter less work per row.
ROWS_PER_INSERT = 64
#: Pieces read ahead of the SQLite thread, and handed to it at once (memory: twice this many ``PIECE_BYTES``).
QUEUED_PIECES = 48
_NULL = "\x0b"  # COPY's NULL: a vertical tab, which COPY writes as \\v inside a value
_INTS = frozenset({"smallint", "int2", "integer", "int", "int4", "bigint", "int8"})
_FLOATS = frozenset({"real", "float4", "double precision", "float8"})
_TEXTS = frozenset({"text", "character varying", "varchar", "character", "char", "bpchar", "name", "json", "jsonb"})
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_UNREADABLE = "odata-sync cannot read "  # marks the error a value Python cannot hold raises in PostgreSQL
_END = object()
_EXPORT = "SELECT pg_export_snapshot()"


@dataclass(frozen=True)
class _Column:
    """How one column travels: the PostgreSQL expression rendering it and what the SQLite side binds (``text``:
    the rendered text, ``int``: integer text, ``float``: hex of a double, ``bytes``: hex of the bytes)."""

    select: str
    kind: str
    nullable: bool
    cast: bool = False  # an integer bound into a column whose affinity would keep text as text: CAST it


def pg_sqlite_pipe(source: PostgreSQLConnector, destination: SQLiteConnector, transfer: Transfer) -> Pipe | None:
    """The pipe for ``transfer`` (not started), or None when a column's values would not be stored the same way as
    the normal path stores them (a type pair without a rendering proven identical)."""
    pairs = list(zip(transfer.source_columns, transfer.columns, strict=True))
    if not pairs or any(_column(theirs, ours, iso=False) is None for theirs, ours in pairs):
        return None
    return _TextPipe(source, destination, transfer)


def _column(theirs: ColumnInfo, ours: ColumnInfo, *, iso: bool) -> _Column | None:
    """The rendering of ``theirs`` stored into ``ours``; None when the normal path converts the value between two
    kinds (the pipe only takes values the destination's converter keeps as they are). ``iso``: the session's
    DateStyle is ISO, so a timestamp's own text is nearly the stored form (cheaper than ``to_char``)."""
    if not values.passes_as_is(theirs.canonical, ours.canonical):
        return None
    name, kind, nullable = _q(theirs.name), theirs.canonical.kind, theirs.nullable
    selected = _select_expr(theirs)
    if selected != name:  # the normal path reads it as text (arrays as JSON, enums, intervals...) and stores that
        return _Column(selected, "text", nullable) if theirs.canonical.is_textual else None
    bare = _split(theirs.native_type)[3]
    if bare in _INTS and theirs.canonical.is_integer:
        return _Column(name, "int", nullable, cast=_affinity(ours.native_type) in ("REAL", "BLOB"))
    if bare in ("boolean", "bool") and kind == "boolean":
        return _Column(f"{name}::int", "int", nullable, cast=_affinity(ours.native_type) in ("REAL", "BLOB"))
    if bare in ("numeric", "decimal") and kind == "decimal":
        return _Column(name, "text", nullable)  # numeric's text is format(Decimal, "f") of asyncpg's Decimal
    if bare in _FLOATS and kind in ("float32", "float64"):
        # the exact double; NULL as NaN, which SQLite stores as NULL, as it does the NaN the normal path binds
        return _Column(f"encode(float8send(coalesce({name}::float8, 'NaN')), 'hex')", "float", False)
    if bare in _TEXTS and theirs.canonical.is_textual:
        return _Column(name, "text", nullable)
    if bare == "uuid" and kind == "uuid":
        return _Column(name, "text", nullable)
    if bare == "bytea" and kind == "binary":
        return _Column(f"encode({name}, 'hex')", "bytes", nullable)
    rendered = _temporal(name, bare, kind, iso)
    return _Column(rendered, "text", nullable) if rendered else None


def _temporal(name: str, bare: str, kind: str, iso: bool) -> str | None:
    """Dates and times as Python's ``isoformat`` writes asyncpg's values: infinities as the ends of Python's range
    (asyncpg's reading), a value outside it an error (asyncpg cannot read it either)."""
    fail = f"(('{_UNREADABLE}' || {name}::text)::int)::text"
    if bare == "date" and kind == "date":
        text = f"{name}::text" if iso else f"to_char({name}, 'YYYY-MM-DD')"
        return (f"CASE WHEN {name} BETWEEN '0001-01-01' AND '9999-12-31' THEN {text} "
                f"WHEN {name} = 'infinity' THEN '9999-12-31' WHEN {name} = '-infinity' THEN '0001-01-01' "
                f"ELSE {fail} END")
    if bare in ("time without time zone", "time") and kind == "time":  # a time's text ignores DateStyle
        return (f"CASE WHEN {name} >= '24:00:00' THEN {fail} WHEN length({name}::text) = 8 THEN {name}::text "
                f"ELSE rpad({name}::text, 15, '0') END")
    if bare in ("timestamp without time zone", "timestamp") and kind == "timestamp":
        return _timestamp(name, name, "", fail, iso)
    if bare in ("timestamp with time zone", "timestamptz") and kind == "timestamptz":
        return _timestamp(f"({name} AT TIME ZONE 'UTC')", name, "+00:00", fail, iso)
    return None


def _timestamp(value: str, name: str, zone: str, fail: str, iso: bool) -> str:
    if iso:  # the ISO text without a fraction when it is zero, else with its trailing zeros cut
        suffix = f" || '{zone}'" if zone else ""
        text = (f"CASE WHEN date_trunc('second', {value}) = {value} THEN {value}::text || '.000000{zone}' "
                f"ELSE rpad({value}::text, 26, '0'){suffix} END")
    else:
        text = f"to_char({value}, 'YYYY-MM-DD HH24:MI:SS.US{zone}')"
    return (f"CASE WHEN {value} BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999' THEN {text} "
            f"WHEN {name} = 'infinity' THEN '9999-12-31 23:59:59.999999{zone}' "
            f"WHEN {name} = '-infinity' THEN '0001-01-01 00:00:00.000000{zone}' ELSE {fail} END")


def _affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (its documented rules, in their order)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _unescape(field: str) -> str | None:
    """A field of COPY's text format as the value it stands for."""
    if field == _NULL:
        return None
    if "\\" not in field:
        return field
    return _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), field)


def _doubles(hexes: list[str]) -> list[float]:
    """Big-endian hex doubles as floats, all at once."""
    found = array.array("d", bytes.fromhex("".join(hexes)))
    if sys.byteorder == "little":
        found.byteswap()
    return found.tolist()


def _blobs(hexes: list[str | None]) -> list[bytes | None]:
    return [None if h is None or h == _NULL else bytes.fromhex(h) for h in hexes]


class _TextPipe(Pipe):
    def __init__(self, source: PostgreSQLConnector, destination: SQLiteConnector, transfer: Transfer) -> None:
        self.source, self.destination, self.transfer = source, destination, transfer
        self.columns: list[_Column] = []
        self._reader: asyncpg.Connection | None = None
        self._holder: asyncpg.Connection | None = None  # holds the snapshot the reader imports (or is the reader)
        self._busy = False  # a COPY is in flight on the reader: it is terminated, not closed
        self._pieces: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUED_PIECES)
        self._reading: asyncio.Task | None = None
        self._from = source._target(transfer.source_table, transfer.source_schema)
        self._select = ""
        self._converters: list[tuple[int, Callable[[list], list]]] = []
        target = destination._target(transfer.table, transfer.schema)
        self._insert_into = f"INSERT INTO {target} ({', '.join(_sq(c.name) for c in transfer.columns)}) VALUES "
        self._rows_per = ROWS_PER_INSERT
        self._statements: dict[tuple[int, bool], str] = {}
        self._rest: list[Any] = []  # fields of the rows not inserted yet (fewer than one statement's)
        self._rest_raw = True
        self._pending = 0  # rows of the chunk in progress (its transaction is open)
        self._carry: tuple[list[Any], bool] | None = None  # fields past the last chunk committed

    async def start(self) -> None:
        """Open the snapshot, make the destination writable, and start reading; the check column's highest value is
        read meanwhile on the connection holding the snapshot (a failing COPY cannot take the snapshot away from
        it)."""
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        async with self.source._guard(f"starting to copy {self.transfer.source_table}"):
            self._holder = holder = await self.source.connect_another()
            await holder.execute(begin)
            try:
                snapshot = await holder.fetchval(_EXPORT)
            except asyncpg.PostgresError:  # not exportable here: one connection, ``highest`` after the copy
                await holder.execute(f"ROLLBACK; {begin}")
                self._reader = holder
            else:
                self._reader = await self.source.connect_another()
                await self._reader.execute(f"{begin}; SET TRANSACTION SNAPSHOT '{snapshot}'")
            iso = await holder.fetchval("SELECT current_setting('DateStyle') LIKE 'ISO%'")
        pairs = zip(self.transfer.source_columns, self.transfer.columns, strict=True)
        self.columns = [c for theirs, ours in pairs if (c := _column(theirs, ours, iso=iso)) is not None]
        self._select = ", ".join(c.select for c in self.columns)
        self._converters = [(i, _doubles if c.kind == "float" else _blobs) for i, c in enumerate(self.columns)
                            if c.kind in ("float", "bytes")]
        async with self.destination._guard(f"starting to copy into {self.transfer.table}"):
            await self.destination._open_for_write()
            limit = await self.destination._run(self.destination.conn.getlimit, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._rows_per = max(1, min(ROWS_PER_INSERT, limit // len(self.columns)))
        self.description = (f"COPY of values rendered as SQLite stores them, committed every "
                            f"{self.transfer.chunk_rows:,} rows")
        if self._reader is not holder:
            self._start_reading()
            if self.transfer.check_copied:
                self._read_meanwhile(self._read_highest(self.transfer.check))

    def _start_reading(self) -> None:
        if self._reading is None:
            self._reading = asyncio.create_task(self._read())

    async def highest(self, column: str) -> Any:
        found = self._found_meanwhile(column)
        return await (found if found is not None else self._read_highest(column))

    async def _read_highest(self, column: str) -> Any:
        """The maximum as the normal path finds it (of the values it reads, text compared by code point), in the
        copy's snapshot."""
        found = next((c for c in self.transfer.source_columns if c.name == column), None)
        if found is None or self._holder is None:
            return None
        selected = _select_expr(found)
        if found.canonical.kind == "binary":  # bytea has no max()
            sql = f"SELECT {selected} FROM {self._from} WHERE {_q(column)} IS NOT NULL ORDER BY 1 DESC LIMIT 1"
        else:
            compared = f'{selected} COLLATE "C"' if found.canonical.is_textual else selected
            sql = f"SELECT max({compared}) FROM {self._from}"
        async with self.source._guard(f"reading the highest {column}"):
            raw = await self._holder.fetchval(sql)
        convert = _read_converter(found, as_selected=True)
        return convert(raw) if convert is not None and raw is not None else raw

    async def chunks(self) -> AsyncIterator[int]:
        """Each chunk's rows once committed; a failure of the COPY is raised after the chunks completed before it."""
        self._start_reading()
        pieces: list[bytes] = []
        end, failure = False, None
        while True:
            if not (pieces or end or failure or self._carry):
                end, failure = self._take(await self._pieces.get(), pieces)
            while not (end or failure or self._pieces.empty()) and len(pieces) < QUEUED_PIECES:
                end, failure = self._take(self._pieces.get_nowait(), pieces)  # the pieces queued: one thread hop
            rows = None
            if pieces or end or self._carry:
                async with self.destination._guard(f"copying into {self.transfer.table}"):
                    rows, used = await self.destination._run(self._write, pieces, end)
                del pieces[:used]
            if rows is not None:
                yield rows  # the caller may stop here: nothing of the next chunk is committed
            elif failure is not None:
                raise failure  # the rows read before it are in the chunk in progress, which is rolled back
            elif end:
                return

    @staticmethod
    def _take(item: Any, pieces: list[bytes]) -> tuple[bool, BaseException | None]:
        """Add a queued piece to ``pieces``; (True, None) at the end of the COPY, (False, what) when it failed."""
        if isinstance(item, BaseException):
            return False, item
        if item is _END:
            return True, None
        pieces.append(item)
        return False, None

    async def _read(self) -> None:
        """Stream the table's COPY into the queue as line-aligned pieces of about ``PIECE_BYTES``, then the end (or
        what failed)."""
        assert self._reader is not None
        parts: list[bytes] = []
        size = 0

        async def output(data: bytes) -> None:
            nonlocal size
            parts.append(data)
            size += len(data)
            if size >= PIECE_BYTES and b"\n" in data:  # a row longer than a piece is joined once, when complete
                whole = b"".join(parts)
                cut = whole.rfind(b"\n") + 1
                parts[:] = [whole[cut:]] if cut < len(whole) else []
                size = len(whole) - cut
                await self._pieces.put(whole[:cut])

        try:
            self._busy = True
            async with self.source._guard(f"reading {self.transfer.source_table}"):
                try:
                    await self._reader.copy_from_query(f"SELECT {self._select} FROM {self._from}", output=output,
                                                       null=_NULL)
                except asyncpg.PostgresError as exc:
                    raise _unreadable(exc) or exc from None
            self._busy = False
            if parts:
                await self._pieces.put(b"".join(parts))
            await self._pieces.put(_END)
        except Exception as exc:
            whole = b"".join(parts)  # the rows before the failure complete the chunks they can
            if cut := whole.rfind(b"\n") + 1:
                await self._pieces.put(whole[:cut])
            await self._pieces.put(exc)

    def _statement(self, rows: int, raw: bool) -> str:
        """INSERT of ``rows`` rows; ``raw``: fields as COPY wrote them, NULLs still vertical tabs."""
        sql = self._statements.get((rows, raw))
        if sql is None:
            values_ = []
            for row in range(rows):
                marks = []
                for i, c in enumerate(self.columns, row * len(self.columns) + 1):
                    mark = f"?{i}"
                    if raw and c.nullable and c.kind in ("text", "int"):
                        mark = f"CASE {mark} WHEN '{_NULL}' THEN NULL ELSE {mark} END"
                    marks.append(f"CAST({mark} AS INTEGER)" if c.cast else mark)
                values_.append(f"({', '.join(marks)})")
            sql = self._statements[(rows, raw)] = self._insert_into + ", ".join(values_)
        return sql

    def _write(self, pieces: list[bytes], end: bool) -> tuple[int | None, int]:
        """Insert pieces (in the SQLite thread) up to the first chunk of ``chunk_rows`` rows completed, which is
        committed; ``end``: no more pieces will come, so the last chunk is committed when they are in. Returns the
        committed chunk's rows (None: none completed) and the number of pieces used; the rows of a used piece past
        the committed chunk are kept for the next call."""
        if self._carry is not None:
            rows = self._fill(*self._carry)
            if rows is not None:
                return rows, 0
        for used, piece in enumerate(pieces, 1):
            rows = self._fill(*self._split(piece))
            if rows is not None:
                return rows, used
        if end and self._pending:
            return self._commit(), len(pieces)
        return None, len(pieces)

    def _split(self, piece: bytes) -> tuple[list[Any], bool]:
        """A piece's fields, and whether they are raw: as COPY wrote them, NULLs still vertical tabs (no escape to
        undo); otherwise unescaped, NULLs None."""
        raw = b"\\" not in piece
        width = len(self.columns)
        fields: list[Any] = piece[:-1].decode().replace("\n", "\t").split("\t")
        if len(fields) % width:
            raise ValueError(f"COPY sent {len(fields)} fields, not a multiple of {width} columns")
        if not raw:
            fields = [_unescape(f) for f in fields]
        for i, convert in self._converters:
            fields[i::width] = convert(fields[i::width])
        return fields, raw

    def _fill(self, fields: list[Any], raw: bool) -> int | None:
        """Insert rows up to the end of the chunk in progress; commit it when full (returns its rows) and keep the
        rows beyond for the next one."""
        self._carry = None
        room = (self.transfer.chunk_rows - self._pending) * len(self.columns)
        if room < len(fields):
            self._carry = (fields[room:], raw)
            fields = fields[:room]
        self._insert(fields, raw)
        return self._commit() if self._pending == self.transfer.chunk_rows else None

    def _insert(self, fields: list[Any], raw: bool) -> None:
        """Insert rows in the chunk's transaction, by whole statements; the rows left over wait for more."""
        conn = self.destination.conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        self._pending += len(fields) // len(self.columns)
        if self._rest and raw != self._rest_raw:
            self._flush()
        fields = self._rest + fields if self._rest else fields
        step = self._rows_per * len(self.columns)
        whole = len(fields) - len(fields) % step
        if whole:
            conn.executemany(self._statement(self._rows_per, raw), (fields[i:i + step] for i in range(0, whole, step)))
        self._rest, self._rest_raw = fields[whole:], raw

    def _commit(self) -> int:
        self._flush()
        self.destination.conn.execute("COMMIT")
        rows, self._pending = self._pending, 0
        return rows

    def _flush(self) -> None:
        """Insert the rows left over, one statement per row."""
        rest, width = self._rest, len(self.columns)
        if rest:
            self.destination.conn.executemany(self._statement(1, self._rest_raw),
                                              (rest[i:i + width] for i in range(0, len(rest), width)))
        self._rest = []

    async def close(self) -> None:
        await self._stop_meanwhile()
        await stop_tasks(self._reading)
        self._reading = None
        reader, holder, self._reader, self._holder = self._reader, self._holder, None, None
        await close_all([c for c in (reader, None if holder is reader else holder) if c is not None],
                        (reader,) if self._busy else ())  # (a COPY cut short on the reader)

        def rollback() -> None:
            self._rest, self._pending, self._carry = [], 0, None
            if self.destination._conn is not None and self.destination._conn.in_transaction:
                self.destination._conn.execute("ROLLBACK")  # a chunk interrupted by a cancel or a failure
        async with self.destination._guard("ending the copy"):
            await self.destination._run(rollback)


def _unreadable(exc: asyncpg.PostgresError) -> BadRequest | None:
    """The error of a value outside Python's range, said as the normal path's converters say it."""
    message = str(exc)
    start = message.find(_UNREADABLE)
    if start < 0:
        return None
    value = message[start + len(_UNREADABLE):].rstrip('"')
    return BadRequest(f"PostgreSQL: the value {value!r} is outside the range of Python's date and time types")

