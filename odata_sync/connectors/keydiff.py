"""The destination's keys that the source no longer has, for PostgreSQL on both sides and one integer key column:
each server sends its keys as a single bytea of big-endian 64-bit integers (``string_agg`` of ``int8send``: one
value, no message per row, never a Python int per key) and numpy finds the destination's keys missing from the
source's. Every key is compared, so the answer is exact; a table of more than ``SLICE_KEYS`` keys is compared a
slice of its key range at a time, which bounds the memory (up to some 40 bytes per key of a slice while it is
compared: both sides' bytes and arrays, and the source's flags).

Sending keys costs each server about what a ``count(*)`` with one more aggregate costs; the range summaries used
before (a hash aggregate per range on both sides, then the keys of differing ranges) cost twice as much CPU.

Which keys may be compared when: the destination's at any time (a key the run writes meanwhile is one the source
has), the source's no earlier than the run's read of the changed rows. The caller either reads those rows in the
comparison's exported snapshot (``snapshot()``), or says when its own read has begun (``read_began()``): a key that
read returned is then among the source's keys or was deleted since, and deleting it is right.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from odata_sync.concurrency import both, stop_tasks

from .base import ColumnInfo, Connector
from .postgresql import INTEGER_TYPES
from .sql import quote_ident

#: Keys per slice at most (by the planner's row estimate): a bytea of 8 bytes per key from each side.
SLICE_KEYS = 2_000_000
#: Keys are looked up in a table of flags (one byte per value of their range) up to this many values per key.
DENSE = 8
#: The (source, destination) providers compared here; other pairs compare every key in a scratch table.
PAIRS = frozenset({("PostgreSQL", "PostgreSQL")})


@dataclass(frozen=True)
class KeyComparison:
    """The source table and key column, and the destination table and key column (same values, maybe other names)."""

    source_table: str
    source_schema: str | None
    source_key: ColumnInfo
    table: str
    schema: str | None
    key: ColumnInfo


def applies(source: Connector, destination: Connector, comparison: KeyComparison) -> bool:
    """Whether this pair and these key columns are compared here."""
    return ((source.provider, destination.provider) in PAIRS
            and comparison.key.native_type.lower() in INTEGER_TYPES
            and comparison.source_key.native_type.lower() in INTEGER_TYPES)


class KeyDiff:
    """A comparison running on connections of its own, so it goes on while the connectors' connections write."""

    def __init__(self, source: Connector, destination: Connector, comparison: KeyComparison) -> None:
        self._theirs = _Side(source, comparison.source_table, comparison.source_schema, comparison.source_key.name)
        self._ours = _Side(destination, comparison.table, comparison.schema, comparison.key.name)
        self._wanted = False  # the caller reads in our snapshot
        self._began = asyncio.Event()  # the caller's read has begun (in its snapshot) or is over (in ours)
        self._go = asyncio.Event()  # either of the two: the source's keys may be read
        self._exported: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._run())

    @classmethod
    def start(cls, source: Connector, destination: Connector, comparison: KeyComparison) -> KeyDiff | None:
        """The comparison under way, or None when this pair or key is not compared here."""
        return cls(source, destination, comparison) if applies(source, destination, comparison) else None

    async def snapshot(self) -> str:
        """The source snapshot that the source's keys are read in, exported for the caller's read of the changed
        rows, which calls ``read_began`` once that read is over (the snapshot lives until then). The comparison's
        error, when it failed before exporting."""
        self._wanted = True
        self._go.set()
        await asyncio.wait([self._exported, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not self._exported.done():
            self._task.result()  # (it ends before exporting only by failing)
        return self._exported.result()

    def read_began(self) -> None:
        """The caller's read of the changed rows has begun in its own snapshot, or is over in ours."""
        self._began.set()
        self._go.set()

    async def missing(self) -> np.ndarray:
        """The destination's keys that the source lacks, in order (after ``read_began``): an array of 64-bit
        integers, 8 bytes a key however many the source lost."""
        return await self._task

    async def abandon(self) -> None:
        """Stop: the task no longer needs the answer (the connections close)."""
        await stop_tasks(self._task)

    async def _run(self) -> np.ndarray:
        try:
            await both(self._theirs.open(), self._ours.open())
            await self._theirs.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # every slice: one snapshot
            await self._go.wait()
            if self._wanted:  # (first: the caller's read waits for it, the slicing need not)
                self._exported.set_result(await self._theirs.export_snapshot())
            rows = max(await both(self._theirs.rows(), self._ours.rows()))
            bounds = await self._ours.bounds() if rows > SLICE_KEYS else None
            if bounds is not None and bounds[0] is None:  # an empty destination lacks nothing
                await self._began.wait()
                return np.empty(0, np.int64)
            found = [await self._compare(where) for where in _slices(rows, bounds)]
            await self._began.wait()  # (an exported snapshot must outlive its import)
            return np.sort(np.concatenate(found))
        finally:
            self._theirs.close()
            self._ours.close()

    async def _compare(self, where: tuple[int, int] | None) -> np.ndarray:
        """One slice's destination keys that the source lacks. The source's keys are read first; the destination's
        from when the caller's read of the changed rows is over or the source's are in, whichever comes first (on
        2 cores: at most two reads beside the run's own work; the source's keys become a KeySet meanwhile)."""
        theirs = asyncio.ensure_future(self._theirs.keys(where))
        began = asyncio.ensure_future(self._began.wait())
        ours: asyncio.Future[np.ndarray] | None = None
        try:
            await asyncio.wait([theirs, began], return_when=asyncio.FIRST_COMPLETED)
            ours = asyncio.ensure_future(self._ours.keys(where))
            present = await asyncio.to_thread(KeySet, await theirs)
            return present.lacking(await ours)
        finally:
            await stop_tasks(theirs, began, ours)


class KeySet:
    """Keys looked up by value: a flag per value of their range when that range is at most ``DENSE`` times their
    number (building it costs about what comparing costs, so it is built while the other side's keys are read, and
    a lookup is then one gather), else their sorted copy. Both take the caller's array, and may change it."""

    def __init__(self, keys: np.ndarray) -> None:
        self._low = int(keys.min()) if len(keys) else 0
        self._high = int(keys.max()) if len(keys) else -1
        span = self._high - self._low + 1
        self._flags: np.ndarray | None = None
        self._sorted: np.ndarray | None = None
        if span <= max(DENSE * len(keys), 1 << 16):
            self._flags = np.zeros(span, dtype=bool)
            self._flags[np.subtract(keys, self._low, out=keys)] = True
        else:
            keys.sort()
            self._sorted = keys

    def lacking(self, keys: np.ndarray) -> np.ndarray:
        """The values of ``keys`` not in the set (in no particular order)."""
        if self._flags is not None:
            if len(keys) and (keys.min() < self._low or keys.max() > self._high):
                inside = (keys >= self._low) & (keys <= self._high)
                return np.concatenate([keys[~inside], self.lacking(keys[inside])])
            offsets = np.subtract(keys, self._low, out=keys)  # (every key within the range: no temporary array)
            return offsets[~self._flags[offsets]] + self._low
        assert self._sorted is not None  # (never empty: no keys make an empty range of flags)
        at = np.searchsorted(self._sorted, keys)
        np.minimum(at, len(self._sorted) - 1, out=at)
        return keys[self._sorted[at] != keys]


def _slices(rows: int, bounds: tuple[int, int] | None) -> list[tuple[int, int] | None]:
    """Key ranges of about ``SLICE_KEYS`` keys each, covering ``bounds`` (the destination's lowest and highest key);
    [None] (every key at once) without bounds."""
    if bounds is None:
        return [None]
    low, high = bounds
    width = -(-(high - low + 1) // -(-rows // SLICE_KEYS))
    return [(start, min(high, start + width - 1)) for start in range(low, high + 1, width)]


class _Side:
    def __init__(self, connector: Connector, table: str, schema: str | None, column: str) -> None:
        self.connector = connector
        self.target = connector._target(table, schema)  # type: ignore[attr-defined]
        self.column = quote_ident(column, '"')
        self.conn: Any = None

    async def open(self) -> None:
        async with self.connector._guard("connecting to compare keys"):
            self.conn = await self.connector.connect_another(  # type: ignore[attr-defined]
                jit="off", max_parallel_workers_per_gather="0")  # (it runs alongside the run's own reads and writes)

    def close(self) -> None:
        """Drop the connection at once: it holds nothing to keep, and a graceful close costs the caller a round
        trip it would wait for before deleting."""
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def execute(self, sql: str) -> None:
        async with self.connector._guard("comparing keys"):
            await self.conn.execute(sql)

    async def _value(self, what: str, sql: str, *args: Any) -> Any:
        async with self.connector._guard(what):
            return await self.conn.fetchval(sql, *args)

    async def export_snapshot(self) -> str:
        return await self._value("exporting a snapshot", "SELECT pg_export_snapshot()")

    async def rows(self) -> int:
        """The planner's row estimate scaled to the table's current size (as the planner does), or an upper bound
        (256 rows a page) for a table never analysed; 0 for views."""
        return int(await self._value(
            "estimating the rows",
            "SELECT CASE WHEN c.reltuples > 0 AND c.relpages > 0 THEN c.reltuples / c.relpages ELSE 256 END "
            "* (pg_relation_size(c.oid) / current_setting('block_size')::int) FROM pg_class c "
            "WHERE c.oid = to_regclass($1)", self.target) or 0)

    async def bounds(self) -> tuple[Any, Any]:
        """Lowest and highest key (read from the key's index)."""
        async with self.connector._guard("reading the key range"):
            row = await self.conn.fetchrow(f"SELECT min({self.column}), max({self.column}) FROM {self.target}")
        return row[0], row[1]

    async def keys(self, where: tuple[int, int] | None) -> np.ndarray:
        """The keys (of the range ``where``, both ends included), as native 64-bit integers."""
        sql = f"SELECT string_agg(int8send({self.column}::bigint), ''::bytea) FROM {self.target}"
        args: tuple[int, ...] = ()
        if where is not None:
            sql, args = f"{sql} WHERE {self.column} BETWEEN $1::bigint AND $2::bigint", where
        data = await self._value("reading the keys", sql, *args)
        return np.frombuffer(data or b"", dtype=">i8").astype(np.int64)
