"""Native type names to canonical types and back, value coercion, and the SQL text helpers."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from odata_sync.connectors import types as T
from odata_sync.connectors.sql import brackets_to_quotes, is_select, render_where, resolve_table, split_name
from odata_sync.connectors.values import coercer, convert_rows
from odata_sync.errors import BadRequest


@pytest.mark.parametrize(("provider", "native", "expected"), [
    ("PostgreSQL", "integer", T.INT32), ("PostgreSQL", "bigint", T.INT64), ("PostgreSQL", "smallint", T.INT16),
    ("PostgreSQL", "numeric(18,4)", T.decimal(18, 4)), ("PostgreSQL", "numeric", T.decimal()),
    ("PostgreSQL", "character varying(20)", T.string(20)), ("PostgreSQL", "character varying", T.TEXT),
    ("PostgreSQL", "character(3)", T.string(3)), ("PostgreSQL", "timestamp(3) without time zone", T.TIMESTAMP),
    ("PostgreSQL", "timestamp with time zone", T.TIMESTAMPTZ), ("PostgreSQL", "jsonb", T.JSON),
    ("PostgreSQL", "integer[]", T.JSON), ("PostgreSQL", "interval", T.TEXT), ("PostgreSQL", "bytea", T.BINARY),
    ("PostgreSQL", "time with time zone", T.TEXT), ("PostgreSQL", "uuid", T.UUID),
    ("MySQL", "tinyint(1)", T.BOOLEAN), ("MySQL", "tinyint(4)", T.INT16), ("MySQL", "int(11)", T.INT32),
    ("MySQL", "int unsigned", T.INT64), ("MySQL", "bigint(20) unsigned", T.decimal(20, 0)),
    ("MySQL", "decimal(65,30)", T.decimal(65, 30)), ("MySQL", "varchar(255)", T.string(255)),
    ("MySQL", "longtext", T.TEXT), ("MySQL", "datetime(6)", T.TIMESTAMP), ("MySQL", "timestamp", T.TIMESTAMPTZ),
    ("MySQL", "enum('a','b')", T.TEXT), ("MySQL", "longblob", T.BINARY), ("MySQL", "json", T.JSON),
    ("MySQL", "bit(1)", T.BOOLEAN), ("MySQL", "uuid", T.UUID), ("MySQL", "double", T.FLOAT64),
    ("SQLite", "INTEGER", T.INT64), ("SQLite", "INT", T.INT32), ("SQLite", "DECIMAL_TEXT(18,4)", T.decimal(18, 4)),
    ("SQLite", "NUMERIC(10,2)", T.decimal(10, 2)), ("SQLite", "VARCHAR(30)", T.string(30)), ("SQLite", "", T.TEXT),
    ("SQLite", "DATETIME", T.TIMESTAMP), ("SQLite", "TIMESTAMPTZ", T.TIMESTAMPTZ), ("SQLite", "BOOLEAN", T.BOOLEAN),
    ("SQLite", "REAL", T.FLOAT64), ("SQLite", "BLOB", T.BINARY), ("SQLite", "UNSIGNED BIG INT", T.INT64),
    ("SQLite", "CLOB", T.TEXT), ("SQLite", "WEIRD", T.decimal()),
    ("DuckDB", "INTEGER", T.INT32), ("DuckDB", "HUGEINT", T.decimal(38, 0)), ("DuckDB", "DECIMAL(18,4)",
                                                                            T.decimal(18, 4)),
    ("DuckDB", "VARCHAR", T.TEXT), ("DuckDB", "TIMESTAMP WITH TIME ZONE", T.TIMESTAMPTZ),
    ("DuckDB", "INTEGER[]", T.JSON), ("DuckDB", "STRUCT(a INTEGER)", T.JSON), ("DuckDB", "UUID", T.UUID),
    ("DuckDB", "ENUM('a', 'b')", T.TEXT), ("DuckDB", "BLOB", T.BINARY), ("DuckDB", "INTERVAL", T.TEXT),
    ("OData", "Edm.Int64", T.INT64), ("OData", "Edm.DateTimeOffset", T.TIMESTAMPTZ), ("OData", "Edm.Guid", T.UUID),
    ("OData", "Collection(Edm.String)", T.JSON), ("CSV", "decimal(18,4)", T.decimal(18, 4)),
])
def test_native_to_canonical(provider: str, native: str, expected: T.CanonicalType) -> None:
    assert T.to_canonical(provider, native) == expected


@pytest.mark.parametrize("provider", ["PostgreSQL", "MySQL", "SQLite", "DuckDB"])
@pytest.mark.parametrize("ctype", [T.INT16, T.INT32, T.INT64, T.decimal(18, 4), T.FLOAT64, T.BOOLEAN, T.string(40),
                                   T.TEXT, T.DATE, T.TIME, T.TIMESTAMP, T.BINARY, T.JSON])
def test_ddl_reads_back_as_the_same_type(provider: str, ctype: T.CanonicalType) -> None:
    native = T.to_native(provider, ctype)
    assert native.lossy is None
    back = T.to_canonical(provider, native.ddl)
    if provider == "DuckDB" and ctype.kind == "string":
        assert back == T.TEXT  # DuckDB VARCHAR has no length
    elif provider == "MySQL" and ctype.kind == "json":
        assert back == T.JSON
    else:
        assert back == ctype


def test_canonical_type_text_round_trips_and_tz_mirrors_the_kind() -> None:
    for ctype in (T.decimal(18, 4), T.string(20), T.TIMESTAMPTZ, T.UUID):
        assert T.parse_canonical(str(ctype)) == ctype
    assert T.CanonicalType("timestamp", tz=True) == T.TIMESTAMPTZ and T.TIMESTAMPTZ.tz and not T.TIMESTAMP.tz
    with pytest.raises(ValueError):
        T.CanonicalType("money")


def test_coercion_to_canonical_values() -> None:
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert coercer(T.TIMESTAMP)(aware) == dt.datetime(2024, 1, 1, 10)
    assert coercer(T.TIMESTAMPTZ)("2024-01-01T10:00:00Z") == dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)
    assert coercer(T.TIMESTAMPTZ)(dt.datetime(2024, 1, 1)).tzinfo is dt.UTC
    assert coercer(T.decimal(18, 4))("12345678901234.5678") == decimal.Decimal("12345678901234.5678")
    assert coercer(T.decimal(18, 4))(0.1) == decimal.Decimal("0.1")
    assert coercer(T.INT32)(decimal.Decimal("7")) == 7
    assert coercer(T.BOOLEAN)("False") is False and coercer(T.BOOLEAN)(1) is True
    assert coercer(T.TIME)(dt.timedelta(hours=1, microseconds=5)) == dt.time(1, 0, 0, 5)
    assert coercer(T.UUID)("12345678-1234-5678-1234-567812345678") == uuid.UUID(int=0x12345678123456781234567812345678)
    assert coercer(T.JSON)({"a": [1, 2]}) == '{"a":[1,2]}'
    assert coercer(T.BINARY)(bytearray(b"\x00")) == b"\x00"
    assert coercer(T.TEXT)(decimal.Decimal("1.50")) == "1.50"
    for ctype, bad in ((T.INT64, "abc"), (T.INT64, 1.5), (T.DATE, "2024-02-30"), (T.UUID, "nope"),
                       (T.BOOLEAN, "maybe")):
        with pytest.raises(BadRequest, match="cannot convert"):
            coercer(ctype)(bad)


def test_convert_rows_keeps_nulls_and_returns_tuples() -> None:
    rows = convert_rows([[1, None, "2"], (None, "x", None)], [coercer(T.INT64), None, coercer(T.INT64)])
    assert rows == [(1, None, 2), (None, "x", None)]
    assert all(type(row) is tuple for row in rows)


@pytest.mark.parametrize(("name", "parts"), [
    ("orders", ["orders"]), ("public.orders", ["public", "orders"]), ('"my schema"."t.x"', ["my schema", "t.x"]),
    ("[dbo].[Order Details]", ["dbo", "Order Details"]), ("`db`.`t`", ["db", "t"]), ('"a""b"', ['a"b']),
])
def test_split_name(name: str, parts: list[str]) -> None:
    assert split_name(name) == parts


def test_resolve_table_prefers_an_explicit_schema() -> None:
    assert resolve_table("public.orders", None) == ("public", "orders")
    assert resolve_table("orders", "sales") == ("sales", "orders")
    with pytest.raises(BadRequest):
        resolve_table("a..b", None)


def test_brackets_become_the_dialect_quotes_outside_literals() -> None:
    sql = "SELECT [Order Id], arr[1], x FROM [dbo].[Orders] WHERE note = '[keep]' -- [comment]"
    assert brackets_to_quotes(sql, '"') == ('SELECT "Order Id", arr[1], x FROM "dbo"."Orders" WHERE note = \'[keep]\''
                                            " -- [comment]")
    assert brackets_to_quotes("SELECT [1, 2] AS l", '"') == "SELECT [1, 2] AS l"


def test_select_detection() -> None:
    assert is_select("  select 1") and is_select("WITH x AS (SELECT 1) SELECT * FROM x") and is_select("(SELECT 1)")
    assert not is_select("orders") and not is_select("public.selections")


def test_filters_render_placeholders_and_nulls() -> None:
    sql, params = render_where([("a", ">=", 5), ("b", "=", None), ("c", "!=", "x")], lambda n: f'"{n}"',
                               lambda i: f"${i}")
    assert sql == '"a" >= $1 AND "b" IS NULL AND "c" <> $2' and params == [5, "x"]
    with pytest.raises(BadRequest):
        render_where([("a", "LIKE", "x")], str, str)
