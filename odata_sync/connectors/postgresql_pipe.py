"""PostgreSQL → PostgreSQL pass-through: binary COPY out of the source, straight into binary COPY into the destination.

A plain table is cut into ranges of pages (``ctid`` ranges, read by TID range scans), copied by ``WORKERS`` pairs of
connections at once; every source connection shares one exported snapshot, so the chunks together are one consistent
picture of the table. Each range is one destination transaction. Views and partitioned tables go as one stream.
Binary COPY needs the same type on both sides: the pipe exists only when every column's type is identical and one of
the built-in types whose binary form does not depend on the database (no OIDs inside).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from odata_sync.concurrency import stop_tasks

from . import values
from .base import WriteCounts
from .passthrough import Pipe, Snapshot, Transfer, in_parallel
from .postgresql import PostgreSQLConnector, _count, _q, _stage_ids, close_all

#: Pairs of connections copying at once: the destination's index maintenance and WAL are the bottleneck, and two
#: backends writing use both cores of a small server.
WORKERS = 2
_BINARY_PORTABLE = frozenset({
    "smallint", "integer", "bigint", "real", "double precision", "numeric", "boolean", "text", "character varying",
    "character", "bytea", "date", "time without time zone", "time with time zone", "timestamp without time zone",
    "timestamp with time zone", "interval", "uuid", "json", "jsonb", "inet", "cidr", "macaddr"})
_SNAPSHOT = re.compile(r"^[0-9A-Fa-f-]+$")
_END = object()


def _snapshot_literal(snapshot: str) -> str:
    """An exported snapshot's id as an SQL literal (hex digits and dashes: anything else is refused)."""
    if not _SNAPSHOT.match(snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    return f"'{snapshot}'"


def _portable(native: str) -> bool:
    bare = re.sub(r"\(.*?\)", "", native.lower()).strip()
    return bare in _BINARY_PORTABLE


def _binary_compatible(transfer: Transfer) -> bool:
    return all(theirs.native_type.lower() == ours.native_type.lower() and _portable(ours.native_type)
               for theirs, ours in zip(transfer.source_columns, transfer.columns, strict=True))


def copy_pipe(source: PostgreSQLConnector, destination: PostgreSQLConnector, transfer: Transfer) -> Pipe | None:
    """The pipe for ``transfer`` (not started), or None when a column's type differs between the two sides."""
    return _CopyPipe(source, destination, transfer) if _binary_compatible(transfer) else None


async def _pipe(reader: asyncpg.Connection, query: str, args: Sequence[Any], writer: asyncpg.Connection,
                table: str, columns: list[str], schema: str | None) -> str:
    """``query``'s rows from ``reader`` into ``table`` on ``writer``, binary COPY into binary COPY; the destination's
    command status. A failure on either side fails the destination's COPY (its transaction rolls back)."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)

    async def produce() -> None:
        try:
            await reader.copy_from_query(query, *args, output=queue.put, format="binary")
        except BaseException as exc:
            await queue.put(exc)
            raise
        await queue.put(_END)

    async def feed() -> AsyncIterator[bytes]:
        while (data := await queue.get()) is not _END:
            if isinstance(data, BaseException):
                raise data
            yield data

    producer = asyncio.create_task(produce())
    try:
        status = await writer.copy_to_table(table, source=feed(), columns=columns, schema_name=schema, format="binary")
        await producer
    finally:
        await stop_tasks(producer)
    return status


async def stage_changes(source: PostgreSQLConnector, destination: PostgreSQLConnector, transfer: Transfer,
                        check: int, lower: Any, snapshot: Snapshot | None = None) -> StagedChanges | None:
    """The source rows whose column ``check`` (a position in ``transfer``) is at or above ``lower``, copied in that
    column's order into a temporary table on the destination's connection, rows never becoming Python values; None
    when a column's type differs between the two sides. ``snapshot``: gives the exported source snapshot to read
    in (None: the read's own)."""
    if not _binary_compatible(transfer):
        return None
    staged = StagedChanges(source, destination, transfer, check)
    await staged.fill(values.coercer(transfer.source_columns[check].canonical)(lower), snapshot)  # as a read encodes it
    return staged


class StagedChanges:
    """The changed rows of an incremental run, staged in the destination and numbered in check-column order, so
    they are merged a batch at a time (``merge``), each batch committed with its highest check value."""

    def __init__(self, source: PostgreSQLConnector, destination: PostgreSQLConnector, transfer: Transfer,
                 check: int) -> None:
        self.source, self.destination, self.transfer = source, destination, transfer
        self.table = f"_odsync_changes_{next(_stage_ids)}"
        self.rows = 0
        self._check_source = _q(transfer.source_columns[check].name)
        self._check = _q(transfer.columns[check].name)
        self._names = [c.name for c in transfer.columns]

    async def fill(self, lower: Any, snapshot: Snapshot | None) -> None:
        t, destination = self.transfer, self.destination
        names = ", ".join(_q(n) for n in self._names)
        async with destination._guard(f"staging the changed rows of {t.table}"):
            await destination.conn.execute(  # (numbered by the source's read: a sequence costs a few ms of DDL)
                f"CREATE TEMP TABLE {_q(self.table)} AS SELECT {names}, 0::bigint AS _odsync_n "
                f"FROM {destination._target(t.table, t.schema)} WITH NO DATA")
        query = (f"SELECT {', '.join(_q(c.name) for c in t.source_columns)}, "
                 f"row_number() OVER (ORDER BY {self._check_source}) "
                 f"FROM {self.source._target(t.source_table, t.source_schema)} "
                 f"WHERE {self._check_source} >= $1 ORDER BY {self._check_source}")
        reader, shared = self.source.conn, await snapshot() if snapshot is not None else None
        async with self.source._guard(f"reading the changed rows of {t.source_table}"):
            if shared is not None:  # (no parallel workers: the key comparison reads alongside, on the same cores)
                await reader.execute(f"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                                     f"SET TRANSACTION SNAPSHOT {_snapshot_literal(shared)}; "
                                     f"SET LOCAL max_parallel_workers_per_gather = 0")
            try:
                self.rows = _count(await _pipe(reader, query, [lower], destination.conn, self.table,
                                               [*self._names, "_odsync_n"], None))
            finally:
                if shared is not None and reader.is_in_transaction():
                    await reader.execute("ROLLBACK")  # (read only: nothing to keep)

    async def merge(self, first: int, rows: int, key: list[str]) -> tuple[WriteCounts, Any]:
        """Upsert staged rows ``first`` .. ``first + rows - 1`` (0-based) into the table, in the caller's transaction;
        the counts and the highest check value among them. A key staged twice: its later row wins."""
        t, destination = self.transfer, self.destination
        columns = await destination._target_columns(t.table, t.schema, self._names)
        batch = f"_odsync_stage_{next(_stage_ids)}"
        within = f"_odsync_n > {int(first)} AND _odsync_n <= {int(first) + int(rows)}"
        keys = ", ".join(_q(k) for k in key)
        async with destination._guard(f"upserting into {t.table}"):
            highest = await destination.conn.fetchval(f"SELECT max({self._check}) FROM {_q(self.table)} "
                                                      f"WHERE {within}")
            if self._unique_in_source(key):  # one snapshot of a table keyed so: no key twice
                return await destination.merge_staged(t.table, t.schema, columns, self.table, key, within), highest
            await destination.conn.execute(
                f"CREATE TEMP TABLE {_q(batch)} ON COMMIT DROP AS SELECT DISTINCT ON ({keys}) "
                f"{', '.join(_q(n) for n in self._names)} FROM {_q(self.table)} WHERE {within} "
                f"ORDER BY {keys}, _odsync_n DESC")
            counts = await destination.merge_staged(t.table, t.schema, columns, batch, key)
        return counts, highest

    def _unique_in_source(self, key: list[str]) -> bool:
        """Whether the source table's primary key lies within the ``key`` columns (destination names)."""
        ours = {k.lower() for k in key}
        pairs = zip(self.transfer.source_columns, self.transfer.columns, strict=True)
        keyed = {theirs.name for theirs, mine in pairs if mine.name.lower() in ours}
        return bool(self.transfer.source_key) and set(self.transfer.source_key) <= keyed

    async def drop(self) -> None:
        async with self.destination._guard("dropping the staged rows"):
            await self.destination.conn.execute(f"DROP TABLE IF EXISTS {_q(self.table)}")


class _CopyPipe(Pipe):
    def __init__(self, source: PostgreSQLConnector, destination: PostgreSQLConnector, transfer: Transfer) -> None:
        self.source, self.destination, self.transfer = source, destination, transfer
        self._readers: list[asyncpg.Connection] = []
        self._writers: list[asyncpg.Connection] = []
        self._ranges: list[tuple[int | None, int | None]] = []
        self._from = source._target(transfer.source_table, transfer.source_schema)
        self._select = ", ".join(_q(c.name) for c in transfer.source_columns)
        self._busy: set[asyncpg.Connection] = set()  # connections with a statement in flight: terminated on close

    async def start(self) -> None:
        """Open the snapshot and the connections, and cut the table into page ranges."""
        async with self.source._guard(f"starting to copy {self.transfer.source_table}"):
            first = await self._reader()
            snapshot = await first.fetchval("SELECT pg_export_snapshot()")
            found = await first.fetchrow(
                "SELECT c.relkind::text AS kind, c.reltuples::float8 AS tuples, "
                "pg_relation_size(c.oid) / current_setting('block_size')::int AS pages "
                "FROM pg_class c WHERE c.oid = to_regclass($1)", self._from)
            self._ranges = _ranges(found, self.transfer.chunk_rows)
            pairs = min(WORKERS, len(self._ranges)) if _SNAPSHOT.match(snapshot or "") else 1
            for _ in range(pairs - 1):
                other = await self._reader()
                await other.execute(f"SET TRANSACTION SNAPSHOT {_snapshot_literal(snapshot)}")
        async with self.destination._guard(f"starting to copy into {self.transfer.table}"):
            for _ in self._readers:  # chunk commits need not wait for the disk: the load's final commit does
                self._writers.append(await self.destination.connect_another(synchronous_commit="off"))
        self.description = (f"binary COPY from the source into the destination, {len(self._ranges)} chunk(s) on "
                            f"{len(self._writers)} connection pair(s), no conversion")

    async def _reader(self) -> asyncpg.Connection:
        conn = await self.source.connect_another()
        self._readers.append(conn)
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return conn

    async def highest(self, column: str) -> Any:
        async with self.source._guard(f"reading the highest {column}"):
            return await self._readers[0].fetchval(f"SELECT max({_q(column)}) FROM {self._from}")

    def chunks(self) -> AsyncIterator[int]:
        return in_parallel(list(zip(self._readers, self._writers, strict=True)), self._ranges, self._copy)

    async def _copy(self, pair: tuple[asyncpg.Connection, asyncpg.Connection],
                    pages: tuple[int | None, int | None]) -> int:
        """One page range, source COPY piped into destination COPY, in one destination transaction."""
        (reader, writer), (low, high) = pair, pages
        bounds = ([f"ctid >= '({low},0)'::tid"] if low is not None else []) + \
                 ([f"ctid < '({high},0)'::tid"] if high is not None else [])
        query = f"SELECT {self._select} FROM {self._from}" + (f" WHERE {' AND '.join(bounds)}" if bounds else "")
        t = self.transfer
        self._busy.update(pair)
        async with self.destination._guard(f"copying into {t.table}"), writer.transaction():
            status = await _pipe(reader, query, (), writer, t.table, [c.name for c in t.columns], t.schema)
        self._busy.difference_update(pair)
        return _count(status)

    async def close(self) -> None:
        connections, self._readers, self._writers = self._readers + self._writers, [], []
        await close_all(connections, self._busy)
        self._busy.clear()


def _ranges(found: Any, chunk_rows: int) -> list[tuple[int | None, int | None]]:
    """Page ranges of about ``chunk_rows`` rows each; the last one open-ended (a table may grow while it is read)."""
    if found is None or found["kind"] != "r" or not found["pages"]:
        return [(None, None)]
    pages, tuples = int(found["pages"]), float(found["tuples"])
    per_page = tuples / pages if tuples > 0 else 50.0
    step = max(1, math.ceil(chunk_rows / max(per_page, 1.0)))
    starts = list(range(0, pages, step))
    return [(start or None, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]
