"""Replication state, kept IN THE DESTINATION next to the data it describes (table ``_odata_sync_state``).

One row per destination table: where its rows come from (``origin``), how far the last load got (``phase``) and the
high-water mark of its check column. The engine writes the row in the same transaction as the batch it describes,
so the mark can never be ahead of the data, whatever kills the process; the metadata store may mirror it, but this
row is the truth. Marks are stored as lossless text with their canonical type (``timestamptz`` marks keep their
offset and microseconds, decimals every digit) and bound as typed parameters when read back, never compared as text.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, replace
from typing import Any

from odata_sync.connectors import ColumnInfo, Connector, values
from odata_sync.connectors import types as ctypes

STATE_TABLE = "_odata_sync_state"

#: A full load into an empty table is under way: if found at the start of a run, it did not finish.
LOADING = "loading"
#: A full re-read that upserts and then deletes what the source no longer has is under way.
RECONCILING = "reconciling"
#: A ReplicateStartDate/ReplicateInterval load is under way; ``mark`` is the start of the next window.
WINDOWED = "windowed"
#: The table is a complete copy as of ``mark``: the next run may be incremental.
DONE = "done"

_COLUMNS = [
    ColumnInfo.of("table_name", ctypes.string(255), primary_key=True),
    ColumnInfo.of("origin", ctypes.TEXT),
    ColumnInfo.of("phase", ctypes.string(16)),
    ColumnInfo.of("check_column", ctypes.TEXT),
    ColumnInfo.of("mark_type", ctypes.string(64)),
    ColumnInfo.of("mark", ctypes.TEXT),
    ColumnInfo.of("saved_at", ctypes.string(40)),
]
_NAMES = [c.name for c in _COLUMNS]


@dataclass(frozen=True)
class TableState:
    table_name: str
    origin: str
    phase: str
    check_column: str | None = None
    mark: Any = None  # a canonical value of ``mark_type``
    mark_type: ctypes.CanonicalType | None = None

    def advanced(self, mark: Any) -> TableState:
        """This state with ``mark`` raised to ``mark`` (never lowered)."""
        if mark is None or (self.mark is not None and not _greater(mark, self.mark)):
            return self
        return replace(self, mark=mark)


def _greater(a: Any, b: Any) -> bool:
    try:
        return a > b
    except TypeError:  # naive vs aware after a type change: the new value wins
        return True


def encode_mark(value: Any) -> str | None:
    """A mark as text that ``decode_mark`` turns back into the same value (microseconds and offsets kept)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.time):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return values.to_text(value)


def decode_mark(text: str | None, ctype: ctypes.CanonicalType | None) -> Any:
    if text is None or ctype is None:
        return None
    return values.coercer(ctype)(text)


class StateTable:
    """The state rows of one destination schema."""

    def __init__(self, destination: Connector, schema: str | None) -> None:
        self.destination = destination
        self.schema = schema
        self._ready = False

    async def ensure(self) -> None:
        """Create the state table when missing (outside any transaction: MySQL commits DDL implicitly)."""
        if self._ready:
            return
        if not await self.destination.table_exists(STATE_TABLE, self.schema):
            await self.destination.create_table(STATE_TABLE, _COLUMNS, ["table_name"], self.schema)
        self._ready = True

    async def load(self, table_name: str) -> TableState | None:
        """The state of ``table_name`` (the table is tiny: read whole, filtered here, which every provider can do)."""
        await self.ensure()
        _columns, batches = await self.destination.read(STATE_TABLE, 1000, columns=_NAMES, schema=self.schema)
        found = None
        async for batch in batches:
            for row in batch:
                text = [None if v is None else v if isinstance(v, str) else values.to_text(v) for v in row]
                if text[0] == table_name:
                    found = text
        if found is None:
            return None
        _name, origin, phase, check_column, mark_type, mark, _saved = found
        ctype = ctypes.parse_canonical(mark_type) if mark_type else None
        return TableState(table_name, origin or "", phase or "", check_column, decode_mark(mark, ctype), ctype)

    async def save(self, state: TableState) -> None:
        """Write ``state`` (in the caller's transaction when there is one)."""
        row = (state.table_name, state.origin, state.phase, state.check_column,
               str(state.mark_type) if state.mark_type is not None else None, encode_mark(state.mark),
               dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"))
        await self.destination.upsert_batch(STATE_TABLE, _NAMES, [row], ["table_name"], self.schema)
