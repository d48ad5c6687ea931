"""The destination's keys that the source no longer has, found without moving every key: for PostgreSQL on both sides
and one integer key column, each server summarises its keys in ranges (count and XOR of 64-bit key hashes per range
of ``2**shift`` key values, an index-friendly GROUP BY), and only the keys of ranges whose summaries differ are
fetched and compared. A 1% change of a million-row table moves a few thousand keys instead of a million each way.

Two different key sets of one range with the same count and hash XOR would hide a delete: with 64-bit hashes the
chance is about 2**-64 per differing range. Other pairs and keys get None, and the caller compares every key.
"""

from __future__ import annotations

import asyncio
import math
import struct
from dataclasses import dataclass
from typing import Any

from .base import ColumnInfo, Connector
from .sql import quote_ident

#: Keys per range aimed at: small ranges keep the fetched keys few when deletes are spread out.
RANGE_KEYS = 16
#: More keys than this in differing ranges (a mass delete): the caller's scratch-table comparison is cheaper.
MAX_FETCHED = 200_000
_INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


@dataclass(frozen=True)
class KeyComparison:
    """The source table and key column, and the destination table and key column (same values, maybe other names)."""

    source_table: str
    source_schema: str | None
    source_key: ColumnInfo
    table: str
    schema: str | None
    key: ColumnInfo


async def missing_keys(source: Connector, destination: Connector, comparison: KeyComparison,
                       read_began: asyncio.Event | None = None) -> list[Any] | None:
    """The key values in the destination that are not in the source, or None when this pair or key type is not
    summarised this way (or too many ranges differ).

    It works on connections of its own, so it can run while the connectors' connections write. The source's keys
    are fetched only once ``read_began`` is set: the caller sets it once its read of the changed rows has begun, so
    a key that read returned is either among the fetched keys or deleted since (and deleting it is right); the
    summaries only choose the ranges to fetch, so they may come from earlier. Without JIT: it compiles longer than
    these queries run; with work_mem for the grouping to stay in memory (the planner expects a group per key)."""
    if (source.provider, destination.provider) != ("PostgreSQL", "PostgreSQL"):
        return None
    ours, theirs = comparison.key.native_type.lower(), comparison.source_key.native_type.lower()
    if ours != theirs or ours not in _INTEGER_TYPES:
        return None
    sides = [_Side(source, comparison.source_table, comparison.source_schema, comparison.source_key.name),
             _Side(destination, comparison.table, comparison.schema, comparison.key.name)]
    try:
        for side in sides:
            await side.open()
            if side.server_major < 14:  # bit_xor came in 14
                return None
        return await _compare(*sides, read_began)
    finally:
        for side in sides:
            await side.close()


async def _compare(theirs: _Side, ours: _Side, read_began: asyncio.Event | None) -> list[Any] | None:
    (their_low, their_high), (low, high) = await asyncio.gather(theirs.bounds(), ours.bounds())
    if low is None:
        return []
    if their_low is not None:
        low, high = min(low, their_low), max(high, their_high)
    shift = max(0, int(math.log2(max(1, (high - low + 1) * RANGE_KEYS / await ours.rows()))))
    their_summary, our_summary = await asyncio.gather(theirs.summary(shift), ours.summary(shift))
    differing = [r for r, summary in our_summary.items() if their_summary.get(r) != summary]
    if sum(our_summary[r][0] for r in differing) > MAX_FETCHED:
        return None
    if not differing:
        return []
    if read_began is not None:
        await read_began.wait()
    their_keys, our_keys = await asyncio.gather(theirs.keys(differing, shift), ours.keys(differing, shift))
    return sorted(our_keys - their_keys)


class _Side:
    def __init__(self, connector: Connector, table: str, schema: str | None, column: str) -> None:
        self.connector = connector
        self.target = connector._target(table, schema)  # type: ignore[attr-defined]
        self.column = quote_ident(column, '"')
        self.conn: Any = None

    async def open(self) -> None:
        async with self.connector._guard("connecting to compare keys"):
            self.conn = await self.connector.connect_another(  # type: ignore[attr-defined]
                jit="off", work_mem="64MB")

    @property
    def server_major(self) -> int:
        return self.conn.get_server_version().major

    async def close(self) -> None:
        """Drop the connection at once: it holds no transaction, and a graceful close costs the caller a round
        trip it would wait for before deleting."""
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _fetch(self, what: str, sql: str, *args: Any) -> list:
        async with self.connector._guard(what):
            return await self.conn.fetch(sql, *args)

    async def bounds(self) -> tuple[int | None, int | None]:
        """Lowest and highest key (read from the key's index)."""
        row = (await self._fetch("reading the key range",
                                 f"SELECT min({self.column}), max({self.column}) FROM {self.target}"))[0]
        return row[0], row[1]

    async def rows(self) -> int:
        """The row count: the planner's estimate, or a count when the table was never analysed."""
        estimate = (await self._fetch("estimating the rows", "SELECT reltuples::bigint FROM pg_class "
                                      "WHERE oid = to_regclass($1)", self.target))[0][0] or 0
        if estimate > 0:
            return estimate
        return max(1, (await self._fetch("counting the keys", f"SELECT count(*) FROM {self.target}"))[0][0])

    async def summary(self, shift: int) -> dict[int, tuple[int, int]]:
        """Range -> (count, hash XOR), fetched as one bytea of big-endian triples: it decodes in one call, and needs
        no array type (asyncpg looks an array type up on every new connection)."""
        data = (await self._fetch(
            "summarising the keys",
            f"SELECT string_agg(int8send(r) || int8send(n) || int8send(h), ''::bytea) FROM (SELECT "
            f"{self.column}::bigint >> {shift} AS r, count(*) AS n, bit_xor(hashint8extended({self.column}::bigint, 0)) "
            f"AS h FROM {self.target} GROUP BY 1) AS s"))[0][0]
        return {r: (n, h) for r, n, h in struct.iter_unpack(">qqq", data or b"")}

    async def keys(self, ranges: list[int], shift: int) -> set[int]:
        rows = await self._fetch(
            "reading the keys of differing ranges",
            f"SELECT string_agg(int8send(t.{self.column}::bigint), ''::bytea) FROM unnest($1::text::bigint[]) AS r(r) "
            f"JOIN {self.target} AS t ON t.{self.column} BETWEEN r.r << {shift} AND (r.r << {shift}) + "
            f"{(1 << shift) - 1}", "{" + ",".join(map(str, ranges)) + "}")
        return {key for (key,) in struct.iter_unpack(">q", rows[0][0] or b"")}
