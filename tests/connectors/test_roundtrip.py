"""Canonical types survive every source -> destination pair.

Each case writes the same rows through provider A's destination path, reads them back through A's source path,
creates a table in provider B from the columns A reports, writes what A returned, reads it back from B and compares
with the original values. Known, reported losses (a UUID stored as text in MySQL, a time-zone instant stored as UTC
wall time in MySQL) are the only differences allowed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import orjson
import pytest

from odata_sync.connectors import ColumnInfo, Connector, TypeWarning
from odata_sync.connectors import types as T

from .conftest import DESTINATIONS, table_name

UTC = dt.UTC
MEGABYTE_TEXT = ("Grüße 東京 🚀 " * 70_000)[:1_000_000]

COLUMNS = [
    ColumnInfo.of("id", T.INT64, primary_key=True),
    ColumnInfo.of("small", T.INT16),
    ColumnInfo.of("medium", T.INT32),
    ColumnInfo.of("amount", T.decimal(18, 4)),
    ColumnInfo.of("big", T.decimal(18, 0)),
    ColumnInfo.of("ratio", T.FLOAT64),
    ColumnInfo.of("flag", T.BOOLEAN),
    ColumnInfo.of("name", T.string(100)),
    ColumnInfo.of("body", T.TEXT),
    ColumnInfo.of("day", T.DATE),
    ColumnInfo.of("clock", T.TIME),
    ColumnInfo.of("stamp", T.TIMESTAMP),
    ColumnInfo.of("moment", T.TIMESTAMPTZ),
    ColumnInfo.of("ident", T.UUID),
    ColumnInfo.of("doc", T.JSON),
    ColumnInfo.of("blob", T.BINARY),
]
NAMES = [c.name for c in COLUMNS]
ROWS = [
    (1, 12, 123456, decimal.Decimal("12345678901234.5678"), decimal.Decimal("999999999999999999"), 3.141592653589793,
     True, "Grüße, 東京 🚀 «quoted» \"double\" 'single', comma; semi\nnewline", "short text", dt.date(2024, 2, 29),
     dt.time(23, 59, 58, 123456), dt.datetime(2024, 2, 29, 13, 14, 15, 123456),
     dt.datetime(2024, 3, 1, 5, 30, 0, 654321, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
     uuid.UUID("12345678-1234-5678-1234-567812345678"), '{"a": 1, "b": [true, null, "x"], "ü": "🚀"}',
     b"\x00\x01binary\xff"),
    (2, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None),
    (3, -32768, -2147483648, decimal.Decimal("-99999999999999.9999"), decimal.Decimal("-1"), -2.5e-300, False,
     "x", MEGABYTE_TEXT, dt.date(1970, 1, 1), dt.time(0, 0), dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
     dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
     uuid.UUID("00000000-0000-0000-0000-000000000000"), "[]", bytes(range(256))),
]

#: The columns each destination must report as lossy when created from COLUMNS.
EXPECTED_WARNINGS = {
    "PostgreSQL": set(),
    "SQLite": {"moment"},
    "MySQL": {"moment", "ident"},
    "DuckDB": set(),
    "CSV": {None},
}


def _comparable(value: Any, kind: str, through_mysql: bool) -> Any:
    """The form in which an original and a read-back value must be equal."""
    if value is None:
        return None
    if kind == "uuid":
        return str(value).lower()
    if kind == "json":
        return orjson.loads(value)
    if kind.startswith("float"):
        return float(value)
    if kind == "timestamptz":
        if through_mysql:  # reported loss: MySQL keeps UTC wall time without zone
            return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        assert value.tzinfo is not None, "a time-zone value came back without its zone"
        return value
    if kind.startswith("int"):
        return int(value)
    if kind == "decimal":
        return decimal.Decimal(value)
    return value


def assert_rows_equal(actual: list[tuple], expected: list[tuple], through_mysql: bool) -> None:
    assert len(actual) == len(expected)
    by_id = {int(row[0]): row for row in actual}
    for row in expected:
        got = by_id[row[0]]
        for column, want, have in zip(COLUMNS, row, got, strict=True):
            kind = column.canonical.kind
            assert _comparable(have, kind, through_mysql) == _comparable(want, kind, through_mysql), \
                f"column {column.name}: {have!r:.80} != {want!r:.80}"


async def read_all(connector: Connector, table: str, **options: Any) -> tuple[list[ColumnInfo], list[tuple]]:
    columns, batches = await connector.read(table, 2, **options)
    rows = [row async for batch in batches for row in batch]
    return columns, rows


async def write_and_read(connector: Connector, columns: list[ColumnInfo], rows: list[tuple]
                         ) -> tuple[list[TypeWarning], list[ColumnInfo], list[tuple]]:
    table = table_name("rt")
    key = [c.name for c in columns if c.primary_key]
    warnings = await connector.create_table(table, columns, key)
    assert await connector.write_batch(table, [c.name for c in columns], rows) == len(rows)
    read_columns, read_rows = await read_all(connector, table)
    return warnings, read_columns, read_rows


@pytest.mark.parametrize("destination", DESTINATIONS)
@pytest.mark.parametrize("source", DESTINATIONS)
async def test_round_trip(source: str, destination: str, connect) -> None:
    first = await connect(source)
    warnings, columns, rows = await write_and_read(first, COLUMNS, ROWS)
    assert {w.column for w in warnings} == EXPECTED_WARNINGS[source]
    assert [c.name for c in columns] == NAMES
    assert [c.ordinal for c in columns] == list(range(1, len(COLUMNS) + 1))
    assert_rows_equal(rows, ROWS, through_mysql=source == "MySQL")

    second = await connect(destination) if destination != source else first
    warnings, columns_b, rows_b = await write_and_read(second, columns, rows)
    assert {w.column for w in warnings} <= EXPECTED_WARNINGS[destination]
    assert [c.name for c in columns_b] == NAMES
    assert_rows_equal(rows_b, ROWS, through_mysql="MySQL" in (source, destination))


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_columns_describe_the_created_table(provider: str, connect) -> None:
    connector = await connect(provider)
    table = table_name("cols")
    await connector.create_table(table, COLUMNS, ["id"])
    columns = {c.name: c for c in await connector.list_columns(table)}
    assert list(columns) == NAMES
    if provider != "CSV":  # CSV keeps neither keys nor types of an empty file
        assert columns["id"].primary_key and not columns["id"].nullable
        assert columns["amount"].canonical == T.decimal(18, 4)
        assert (columns["amount"].precision, columns["amount"].scale) == (18, 4)
        assert columns["flag"].canonical == T.BOOLEAN
        assert columns["day"].canonical == T.DATE
        assert columns["blob"].canonical == T.BINARY
        assert columns["stamp"].canonical == T.TIMESTAMP
        assert columns["ident"].canonical in (T.UUID, T.string(36))
        assert columns["doc"].canonical == T.JSON
        assert columns["name"].nullable and not columns["name"].primary_key
    tables = {t.name for t in await connector.list_tables("TABLES")}
    assert table in tables


def test_lossy_mappings_are_reported() -> None:
    cases = [
        ("SQLite", T.TIMESTAMPTZ), ("MySQL", T.UUID), ("MySQL", T.TIMESTAMPTZ), ("DuckDB", T.decimal(50, 10)),
        ("MySQL", T.decimal(70, 10)), ("MySQL", T.decimal()), ("DuckDB", T.decimal()),
    ]
    for provider, ctype in cases:
        ddl, warnings = T.map_columns(provider, [("c", ctype)])
        assert len(warnings) == 1, (provider, ctype)
        assert warnings[0].column == "c" and warnings[0].stored_as == ddl[0]
        assert provider in str(warnings[0])
    for provider in ("PostgreSQL", "SQLite", "MySQL", "DuckDB"):
        assert T.map_columns(provider, [("c", T.decimal(18, 4)), ("d", T.INT64), ("e", T.TEXT)])[1] == []


async def test_wide_decimal_into_duckdb_keeps_every_digit_as_text(connect) -> None:
    duck = await connect("DuckDB")
    table = table_name("wide")
    value = decimal.Decimal("1234567890123456789012345678901234567890.1234567890")
    warnings = await duck.create_table(table, [ColumnInfo.of("v", T.decimal(50, 10))])
    assert [w.column for w in warnings] == ["v"]
    await duck.write_batch(table, ["v"], [(value,)])
    _, rows = await read_all(duck, table)
    assert decimal.Decimal(rows[0][0]) == value
