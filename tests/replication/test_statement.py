"""The REPLICATE parser: every form, names of any shape (property-based), and errors that point at the problem."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odata_sync.errors import BadRequest
from odata_sync.replication import ColumnDefinition, Options, ReplicateStatement, TableName, parse_replicate


def test_plain_table():
    assert parse_replicate("REPLICATE[orders]").target.name == "orders"
    s = parse_replicate("REPLICATE [orders]")
    assert s == ReplicateStatement(TableName(("orders",)))
    assert s.source_table == TableName(("orders",)) and s.select is None


@pytest.mark.parametrize("text, parts", [
    ("REPLICATE orders", ("orders",)),
    ("replicate Orders;", ("Orders",)),
    ("  Replicate\n\t[dbo].[Orders]  ;  ", ("dbo", "Orders")),
    ('REPLICATE "public"."orders"', ("public", "orders")),
    ("REPLICATE `db`.`t`", ("db", "t")),
    ("REPLICATE [Account.csv]", ("Account.csv",)),
    ("REPLICATE [a]]b]", ("a]b",)),
    ('REPLICATE "a""b"', ('a"b',)),
    ("REPLICATE cat.[sch].\"tab\"", ("cat", "sch", "tab")),
    ("REPLICATE [my table] -- a comment", ("my table",)),
    ("REPLICATE /* why */ [t]", ("t",)),
    ("REPLICATE public . orders", ("public", "orders")),
])
def test_names(text, parts):
    s = parse_replicate(text)
    assert s.target.parts == parts and s.select is None


def test_select_is_kept_as_text():
    text = "REPLICATE [Dest] SELECT a, CONCAT(b, ' ', c) AS d FROM [Src] WHERE x LIKE '%WITH;%' "
    s = parse_replicate(text)
    assert s.target == TableName(("Dest",))
    assert s.select == "SELECT a, CONCAT(b, ' ', c) AS d FROM [Src] WHERE x LIKE '%WITH;%'"
    assert s.source_table is None
    assert parse_replicate("REPLICATE [D] SELECT 1;").select == "SELECT 1"
    assert parse_replicate("REPLICATE [D] (SELECT 1) UNION (SELECT 2)").select == "(SELECT 1) UNION (SELECT 2)"


def test_schema_qualified_destination_with_select():
    s = parse_replicate('REPLICATE "stage"."orders_copy" select * from orders')
    assert s.target.schema == "stage" and s.target.name == "orders_copy"


def test_column_definitions_and_primary_key():
    s = parse_replicate("REPLICATE [T] (A VARCHAR(50), B INT NOT NULL, [C d] NUMERIC(12, 2), "
                        "PRIMARY KEY (A, [B])) SELECT A, B, C FROM Src")
    assert s.columns == (ColumnDefinition("A", "VARCHAR(50)"), ColumnDefinition("B", "INT", nullable=False),
                         ColumnDefinition("C d", "NUMERIC(12, 2)"))
    assert s.primary_key == ("A", "B")
    assert s.select == "SELECT A, B, C FROM Src"


def test_inline_primary_key_and_key_only_definition():
    s = parse_replicate("REPLICATE [T] (id BIGINT PRIMARY KEY, v DOUBLE PRECISION, t TIMESTAMP WITH TIME ZONE) "
                        "SELECT * FROM t")
    assert s.primary_key == ("id",)
    assert s.columns[0] == ColumnDefinition("id", "BIGINT", nullable=False)
    assert s.columns[1].type == "DOUBLE PRECISION" and s.columns[2].type == "TIMESTAMP WITH TIME ZONE"
    only_key = parse_replicate("REPLICATE [T] (PRIMARY KEY(id, region)) SELECT * FROM t")
    assert only_key.columns == () and only_key.primary_key == ("id", "region")
    enum = parse_replicate("REPLICATE [T] (s ENUM('a,b', 'c)')) SELECT s FROM t")
    assert enum.columns[0].type == "ENUM('a,b', 'c)')"


def test_options_before_and_after_the_select():
    before = parse_replicate("REPLICATE [T] WITH IncrementalCheckColumns='updated,modified', BatchSize=10 "
                             "SELECT * FROM x")
    assert before.options == Options(incremental_check_columns=("updated", "modified"), batch_size=10)
    assert before.select == "SELECT * FROM x"
    after = parse_replicate("REPLICATE [T] SELECT * FROM x WITH droptable, SKIPDELETED='True', BatchSize='5';")
    assert after.options == Options(drop_table=True, skip_deleted=True, batch_size=5)
    assert after.select == "SELECT * FROM x"
    bare = parse_replicate("replicate [t] with TruncateTable = 'false', AlterSchema=true, IncrementalLookback=2.5, "
                           "ReplicateStartDate='2024-01-01', ReplicateInterval=7, ReplicateIntervalUnit=day")
    assert bare.options == Options(truncate_table=False, alter_schema=True, incremental_lookback=2.5,
                                   replicate_start_date="2024-01-01", replicate_interval=7,
                                   replicate_interval_unit="days")
    assert bare.select is None


def test_with_that_is_sql_stays_in_the_select():
    cte = parse_replicate("REPLICATE [T] WITH recent AS (SELECT * FROM o) SELECT * FROM recent")
    assert cte.select == "WITH recent AS (SELECT * FROM o) SELECT * FROM recent" and cte.options == Options()
    cast = parse_replicate("REPLICATE [T] SELECT ts::timestamp WITH time zone AS t FROM o WITH DropTable")
    assert cast.select == "SELECT ts::timestamp WITH time zone AS t FROM o" and cast.options.drop_table is True
    both = parse_replicate("REPLICATE [T] WITH BatchSize=3 WITH c AS (SELECT 1) SELECT * FROM c")
    assert both.options.batch_size == 3 and both.select.startswith("WITH c AS")


def _error(text: str) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_replicate(text)
    assert caught.value.target == "Query"
    return caught.value.message


@pytest.mark.parametrize("text, position, expected", [
    ("", 1, "REPLICATE"),
    ("SELECT * FROM t", 1, "REPLICATE"),
    ("REPLICATE", 10, "a table name"),
    ("REPLICATEorders", 1, "REPLICATE"),
    ("REPLICATE [T", 13, "']' closing the name that starts at position 11"),
    ('REPLICATE "T', 13, "'\"' closing the name"),
    ("REPLICATE []", 11, "a table name"),
    ("REPLICATE [T] garbage", 15, "SELECT, WITH, '(' or the end"),
    ("REPLICATE [T] (A INT,", 22, "a column definition"),
    ("REPLICATE [T] (A)", 17, "a data type"),
    ("REPLICATE [T] (A INT, a TEXT) SELECT 1", 23, "declared twice"),
    ("REPLICATE [T] (A INT, PRIMARY KEY (B)) SELECT 1", 23, "'B' is not declared"),
    ("REPLICATE [T] (A INT PRIMARY KEY, PRIMARY KEY (A)) SELECT 1", 35, "one PRIMARY KEY only"),
    ("REPLICATE [T] (PRIMARY (A)) SELECT 1", 24, "KEY after PRIMARY"),
    ("REPLICATE [T] WITH BatchSize=x", 30, "BatchSize must be a positive integer"),
    ("REPLICATE [T] WITH BatchSize", 29, "'=' and a value for BatchSize"),
    ("REPLICATE [T] WITH DropTable='maybe'", 30, "DropTable must be true or false"),
    ("REPLICATE [T] WITH ReplicateIntervalUnit=fortnights", 42, "ReplicateIntervalUnit must be one of"),
    ("REPLICATE [T] WITH ReplicateStartDate='yesterday'", 39, "ReplicateStartDate must be a date"),
    ("REPLICATE [T] WITH DropTable=true, DropTable=false", 36, "each option once"),
    ("REPLICATE [T] WITH DropTable=true junk", 35, "',' between options, SELECT or the end of the statement"),
    ("REPLICATE [T] SELECT 1; DROP TABLE x", 25, "one statement per task"),
    ("REPLICATE [T] WITH BatchSize=1 SELECT 1 WITH DropTable", 41, "one WITH clause"),
    ("REPLICATE [a].[b].[c].[d]", 22, "at most three name parts"),
    ("REPLICATE [T] /* open", 22, "'*/' closing the comment"),
    ("REPLICATE [T] WITH BatchSize='10", 33, "a closing ' for the value that starts at position 30"),
])
def test_errors_name_the_position_and_what_was_expected(text, position, expected):
    message = _error(text)
    assert f"at position {position}," in message, message
    assert expected in message, message


def test_unknown_option_is_named():
    message = _error("REPLICATE [T] WITH Foo='1'")
    assert "at position 20" in message and "unknown option 'Foo'" in message and "IncrementalCheckColumns" in message
    assert "unknown option 'Bar'" in _error("REPLICATE [T] SELECT * FROM x WITH Bar=2")


def test_parsing_is_fast():
    import time

    text = "REPLICATE [dbo].[Orders] (id INT, PRIMARY KEY(id)) SELECT " + ", ".join(
        f"c{i}" for i in range(200)) + " FROM [dbo].[Orders] WHERE a = 'x' WITH DropTable"
    started = time.perf_counter()
    for _ in range(200):
        parse_replicate(text)
    assert (time.perf_counter() - started) / 200 < 0.005


# --- property-based: any name survives quoting and parsing ----------------------------------------------------------

_names = st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s)
_bare = st.from_regex(re.compile(r"[A-Za-z_][A-Za-z0-9_$#@]{0,20}"), fullmatch=True)


def _bracket(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _double(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _back(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_names, min_size=1, max_size=3), style=st.sampled_from([_bracket, _double, _back]))
def test_quoted_names_round_trip(parts, style):
    text = "REPLICATE " + ".".join(style(p) for p in parts)
    assert parse_replicate(text).target.parts == tuple(parts)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_bare, min_size=1, max_size=3))
def test_bare_names_round_trip(parts):
    assert parse_replicate("REPLICATE " + ".".join(parts) + ";").target.parts == tuple(parts)


@settings(max_examples=200, deadline=None)
@given(target=st.lists(_names, min_size=1, max_size=2), columns=st.lists(_names, min_size=0, max_size=4, unique_by=str.lower),
       batch=st.one_of(st.none(), st.integers(1, 10**6)), drop=st.one_of(st.none(), st.booleans()),
       check=st.one_of(st.none(), st.lists(_bare, min_size=1, max_size=3).map(tuple)),
       select=st.sampled_from([None, "SELECT * FROM [src]", "SELECT a, b FROM x WHERE y = 'it''s'"]))
def test_statements_round_trip_through_to_text(target, columns, batch, drop, check, select):
    declared = tuple(ColumnDefinition(c, "VARCHAR(20)") for c in columns)
    statement = ReplicateStatement(TableName(tuple(target)), select=select if declared or select else select,
                                   columns=declared, primary_key=tuple(columns[:1]),
                                   options=Options(batch_size=batch, drop_table=drop,
                                                   incremental_check_columns=check))
    assert parse_replicate(statement.to_text()) == statement
