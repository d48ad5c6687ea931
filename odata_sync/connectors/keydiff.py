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
from dataclasses import dataclass
from typing import Any

from .base import ColumnInfo, Connector
from .sql import quote_ident

#: Keys per range aimed at: small ranges keep the fetched keys few when deletes are spread out.
RANGE_KEYS = 64
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


async def missing_keys(source: Connector, destination: Connector, comparison: KeyComparison) -> list[Any] | None:
    """The key values in the destination that are not in the source, or None when this pair or key type is not
    summarised this way (or too many ranges differ)."""
    if (source.provider, destination.provider) != ("PostgreSQL", "PostgreSQL"):
        return None
    ours, theirs = comparison.key.native_type.lower(), comparison.source_key.native_type.lower()
    if ours != theirs or ours not in _INTEGER_TYPES:
        return None
    for side in (source, destination):
        await side.open()
        if side.conn.get_server_version().major < 14:  # type: ignore[attr-defined]  # bit_xor came in 14
            return None
    sides = [_Side(source, comparison.source_table, comparison.source_schema, comparison.source_key.name),
             _Side(destination, comparison.table, comparison.schema, comparison.key.name)]
    (their_low, their_high), (low, high) = await asyncio.gather(*(side.bounds() for side in sides))
    if low is None:
        return []
    if their_low is not None:
        low, high = min(low, their_low), max(high, their_high)
    shift = max(0, int(math.log2(max(1, (high - low + 1) * RANGE_KEYS / await sides[1].rows()))))
    theirs_summary, ours_summary = await asyncio.gather(*(side.summary(shift) for side in sides))
    differing = [r for r, summary in ours_summary.items() if theirs_summary.get(r) != summary]
    if sum(ours_summary[r][0] for r in differing) > MAX_FETCHED:
        return None
    if not differing:
        return []
    theirs_keys, ours_keys = await asyncio.gather(*(side.keys(differing, shift) for side in sides))
    return sorted(ours_keys - theirs_keys)


class _Side:
    def __init__(self, connector: Connector, table: str, schema: str | None, column: str) -> None:
        self.connector = connector
        self.target = connector._target(table, schema)  # type: ignore[attr-defined]
        self.column = quote_ident(column, '"')

    async def _fetch(self, what: str, sql: str, *args: Any) -> list:
        connector = self.connector
        await connector.open()
        async with connector._guard(what):
            return await connector.conn.fetch(sql, *args)  # type: ignore[attr-defined]

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
        rows = await self._fetch(
            "summarising the keys",
            f"SELECT {self.column}::bigint >> {shift} AS r, count(*) AS n, "
            f"bit_xor(hashint8extended({self.column}::bigint, 0)) AS h FROM {self.target} GROUP BY 1")
        return {row["r"]: (row["n"], row["h"]) for row in rows}

    async def keys(self, ranges: list[int], shift: int) -> set[int]:
        rows = await self._fetch(
            "reading the keys of differing ranges",
            f"SELECT t.{self.column} AS k FROM unnest($1::bigint[]) AS r(r) JOIN {self.target} AS t "
            f"ON t.{self.column} BETWEEN r.r << {shift} AND (r.r << {shift}) + {(1 << shift) - 1}", ranges)
        return {row["k"] for row in rows}
