"""Row count and an order-independent checksum of a table's canonicalised rows, through any connector.

Each value is brought to one text form whatever the provider stored it as (decimals without trailing zeros, instants
in UTC, booleans as 0/1…), each row is hashed, and the hashes are summed modulo 2**64: equal tables give equal
checksums whatever their row order, column order or provider.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from odata_sync.connectors import Connector

_MASK = (1 << 64) - 1


def _decimal(value: decimal.Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


_CANONICAL: dict[type, Callable[[Any], str]] = {
    str: str, int: str, bool: lambda v: "1" if v else "0", decimal.Decimal: _decimal,
    float: lambda v: _decimal(decimal.Decimal(repr(v))), dt.datetime: _datetime, dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat, bytes: bytes.hex, uuid.UUID: str, type(None): lambda _v: "\x00",
}


def canonical(value: Any) -> str:
    """One text form per value, whatever the provider stored it as."""
    convert = _CANONICAL.get(type(value))
    if convert is None:
        return bytes(value).hex() if isinstance(value, bytearray | memoryview) else str(value)
    return convert(value)


def row_hash(row: Sequence[Any]) -> int:
    text = "\x1f".join([canonical(v) for v in row])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


async def checksum(connector: Connector, table: str, columns: Sequence[str], *, schema: str | None = None,
                   where: Sequence[tuple] = ()) -> tuple[int, int]:
    """(row count, checksum) of ``columns`` of ``table`` (optionally filtered)."""
    count, total = 0, 0
    _cols, batches = await connector.read(table, 10_000, columns=list(columns), where=list(where), schema=schema)
    async for batch in batches:
        count += len(batch)
        for row in batch:
            total = (total + row_hash(row)) & _MASK
    return count, total


async def duplicate_keys(connector: Connector, table: str, key: str, *, schema: str | None = None) -> int:
    """How many key values appear more than once (0 for a table without duplicates)."""
    seen: set = set()
    duplicates = 0
    _cols, batches = await connector.read(table, 10_000, columns=[key], schema=schema)
    async for batch in batches:
        for (value,) in batch:
            if value in seen:
                duplicates += 1
            seen.add(value)
    return duplicates
