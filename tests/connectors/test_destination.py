"""Destination semantics on every provider: upserts with exact counts, deletes, transactions, staging swaps, DDL."""

from __future__ import annotations

import decimal

import pytest

from odata_sync.connectors import ColumnInfo, Connector, WriteCounts
from odata_sync.connectors import types as T
from odata_sync.errors import BadRequest

from .conftest import DESTINATIONS, table_name

COLUMNS = [ColumnInfo.of("id", T.INT64, primary_key=True), ColumnInfo.of("name", T.string(50)),
           ColumnInfo.of("amount", T.decimal(12, 2))]
NAMES = [c.name for c in COLUMNS]
D = decimal.Decimal


async def rows_of(connector: Connector, table: str, **options) -> list[tuple]:
    _, batches = await connector.read(table, 1000, **options)
    return sorted([row async for batch in batches for row in batch], key=repr)


async def make_table(connector: Connector, rows: list[tuple] | None = None, columns=COLUMNS) -> str:
    table = table_name("dst")
    await connector.create_table(table, columns, [c.name for c in columns if c.primary_key])
    if rows:
        await connector.write_batch(table, [c.name for c in columns], rows)
    return table


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_upsert_counts_inserted_and_updated_rows_only(provider: str, connect) -> None:
    connector = await connect(provider)
    table = await make_table(connector, [(1, "one", D("1.00")), (2, "two", D("2.00")), (3, "three", None)])
    counts = await connector.upsert_batch(table, NAMES, [
        (2, "TWO", D("2.00")),     # changed
        (3, "three", None),        # unchanged, NULL included
        (4, "four", D("4.00")),    # new...
        (4, "four!", D("4.50")),   # ...and the last version of a key in a batch wins
        (1, "One", D("1.00")),     # a change of case only is a change
    ], ["id"])
    assert counts == WriteCounts(inserted=1, updated=2)
    assert await rows_of(connector, table) == [(1, "One", D("1.00")), (2, "TWO", D("2.00")), (3, "three", None),
                                               (4, "four!", D("4.50"))]
    again = await connector.upsert_batch(table, NAMES, [(4, "four!", D("4.50"))], ["id"])
    assert again.affected == 0


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_upsert_counts_without_a_unique_index_and_with_key_columns_only(provider: str, connect) -> None:
    """A table made elsewhere without a key index (no ON CONFLICT arbiter), and a table of key columns only."""
    connector = await connect(provider)
    table = table_name("dst")
    await connector.create_table(table, COLUMNS, [])
    await connector.write_batch(table, NAMES, [(1, "one", D("1.00")), (2, "two", None)])
    counts = await connector.upsert_batch(table, NAMES, [(1, "one", D("1.00")), (2, "TWO", None), (3, "x", None)],
                                          ["id"])
    assert counts == WriteCounts(inserted=1, updated=1)
    assert await rows_of(connector, table) == [(1, "one", D("1.00")), (2, "TWO", None), (3, "x", None)]
    keys = await make_table(connector, [(1,)], [ColumnInfo.of("id", T.INT64, primary_key=True)])
    assert await connector.upsert_batch(keys, ["id"], [(1,), (2,)], ["id"]) == WriteCounts(inserted=1, updated=0)
    assert await rows_of(connector, keys) == [(1,), (2,)]


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_upserts_follow_the_table_when_it_is_made_again_without_its_key(provider: str, connect) -> None:
    """What a connector learnt about a table's key index (PostgreSQL asks once) is forgotten when the table is
    dropped and made again through it: the next upsert finds no index to resolve conflicts with, and still works."""
    connector = await connect(provider)
    table = await make_table(connector, [(1, "one", D("1.00"))])
    assert await connector.upsert_batch(table, NAMES, [(1, "ONE", None)], ["id"]) == WriteCounts(updated=1)
    await connector.drop_table(table)
    await connector.create_table(table, COLUMNS, [])
    await connector.write_batch(table, NAMES, [(1, "one", D("1.00"))])
    counts = await connector.upsert_batch(table, NAMES, [(1, "uno", None), (2, "two", None)], ["id"])
    assert counts == WriteCounts(inserted=1, updated=1)
    assert await rows_of(connector, table) == [(1, "uno", None), (2, "two", None)]
    if connector.defers_primary_key:  # and learns of the key added afterwards
        await connector.add_primary_key(table, ["id"])
        assert await connector.upsert_batch(table, NAMES, [(2, "TWO", None)], ["id"]) == WriteCounts(updated=1)


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_upsert_and_delete_with_a_composite_key(provider: str, connect) -> None:
    connector = await connect(provider)
    columns = [ColumnInfo.of("region", T.string(10), primary_key=True), ColumnInfo.of("n", T.INT32, primary_key=True),
               ColumnInfo.of("v", T.TEXT)]
    table = await make_table(connector, [("eu", 1, "a"), ("us", 1, "b")], columns)
    counts = await connector.upsert_batch(table, ["region", "n", "v"], [("eu", 1, "A"), ("eu", 2, "c")],
                                          ["region", "n"])
    assert counts == WriteCounts(inserted=1, updated=1)
    assert await connector.delete_keys(table, ["region", "n"], [("us", 1), ("us", 9), ("us", 1)]) == 1
    assert await rows_of(connector, table) == [("eu", 1, "A"), ("eu", 2, "c")]


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_a_batch_and_its_checkpoint_commit_or_roll_back_together(provider: str, connect) -> None:
    connector = await connect(provider)
    table = await make_table(connector, [(1, "one", None)])
    state = await make_table(connector, columns=[ColumnInfo.of("task", T.string(20), primary_key=True),
                                                 ColumnInfo.of("mark", T.TIMESTAMP)])

    await connector.begin()
    await connector.write_batch(table, NAMES, [(2, "two", None)])
    await connector.upsert_batch(table, NAMES, [(1, "ONE", None)], ["id"])
    await connector.upsert_batch(state, ["task", "mark"], [("t1", "2024-01-01 00:00:00")], ["task"])
    assert connector.in_transaction
    await connector.rollback()
    assert await rows_of(connector, table) == [(1, "one", None)]
    assert await rows_of(connector, state) == []

    with pytest.raises(RuntimeError):
        async with connector.transaction():
            await connector.write_batch(table, NAMES, [(3, "three", None)])
            raise RuntimeError("the run was killed")
    assert await rows_of(connector, table) == [(1, "one", None)]

    async with connector.transaction():
        await connector.write_batch(table, NAMES, [(2, "two", None)])
        await connector.delete_keys(table, ["id"], [(1,)])
        await connector.upsert_batch(state, ["task", "mark"], [("t1", "2024-01-02 00:00:00")], ["task"])
    assert [r[0] for r in await rows_of(connector, table)] == [2]
    assert len(await rows_of(connector, state)) == 1


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_several_rewrites_of_one_table_in_one_transaction(provider: str, connect) -> None:
    connector = await connect(provider)
    table = await make_table(connector, [(i, f"n{i}", None) for i in range(1, 6)])
    async with connector.transaction():
        await connector.upsert_batch(table, NAMES, [(1, "changed", None), (6, "new", None)], ["id"])
        await connector.delete_keys(table, ["id"], [(2,)])
        await connector.write_batch(table, NAMES, [(7, "appended", None)])
        await connector.upsert_batch(table, NAMES, [(3, "changed too", D("3.00"))], ["id"])
        await connector.delete_keys(table, ["id"], [(4,)])
    assert await rows_of(connector, table) == [(1, "changed", None), (3, "changed too", D("3.00")),
                                               (5, "n5", None), (6, "new", None), (7, "appended", None)]
    await connector.begin()
    await connector.delete_keys(table, ["id"], [(1,), (3,)])
    await connector.write_batch(table, NAMES, [(8, "gone", None)])
    await connector.upsert_batch(table, NAMES, [(5, "gone", None)], ["id"])
    await connector.rollback()
    assert [r[0] for r in await rows_of(connector, table)] == [1, 3, 5, 6, 7]


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_staging_swap_rename_truncate_add_column_and_drop(provider: str, connect) -> None:
    connector = await connect(provider)
    live = await make_table(connector, [(1, "old", None)])
    staging = await make_table(connector, [(1, "new", None), (2, "new", None)])
    await connector.swap_tables(live, staging)
    assert [r[1] for r in await rows_of(connector, live)] == ["new", "new"]
    assert [r[1] for r in await rows_of(connector, staging)] == ["old"]
    await connector.drop_table(staging)
    await connector.drop_table(staging)  # dropping a missing table is fine
    assert not await connector.table_exists(staging)

    renamed = table_name("renamed")
    await connector.rename_table(live, renamed)
    assert await connector.table_exists(renamed) and not await connector.table_exists(live)

    await connector.add_column(renamed, ColumnInfo.of("extra", T.BOOLEAN))
    await connector.write_batch(renamed, ["id", "extra"], [(3, True)])
    assert (3, None, None, True) in await rows_of(connector, renamed)
    await connector.truncate(renamed)
    assert await rows_of(connector, renamed) == []
    await connector.drop_table(renamed)


@pytest.mark.parametrize("provider", ["PostgreSQL", "SQLite", "MySQL", "DuckDB"])
async def test_sql_reads_filters_and_statements(provider: str, connect) -> None:
    connector = await connect(provider)
    table = await make_table(connector, [(1, "a", D("1.50")), (2, "b", None), (3, "c", D("3.00"))])
    assert await connector.execute(f"UPDATE {table} SET name = 'z' WHERE id >= 2") == 2
    rows = await rows_of(connector, table, columns=["id", "name"], where=[("amount", ">=", "1.5"), ("id", "<>", 3)])
    assert rows == [(1, "a")]
    _, batches = await connector.read(table, 10, order_by=["id DESC"], where=[("amount", "=", None)])
    assert [row async for batch in batches for row in batch] == [(2, "z", None)]
    _, batches = await connector.read(f"SELECT id, name FROM [{table}] WHERE id < 3", 10, order_by=["id"])
    assert [row async for batch in batches for row in batch] == [(1, "a"), (2, "z")]
    assert await connector.estimate_rows(table) >= 0


@pytest.mark.parametrize(("provider", "schema"), [("PostgreSQL", "public"), ("SQLite", "main"),
                                                  ("DuckDB", "main"), ("MySQL", None)])
async def test_schema_qualified_names(provider: str, schema: str | None, connect) -> None:
    connector = await connect(provider)
    table = await make_table(connector, [(1, "a", None)])
    tables = await connector.list_tables("ALL")
    info = next(t for t in tables if t.name == table)
    qualified = f"{schema or info.schema}.{table}"
    assert [c.name for c in await connector.list_columns(qualified)] == NAMES
    assert await rows_of(connector, qualified) == [(1, "a", None)]
    await connector.write_batch(qualified, ["id"], [(2,)])
    assert len(await rows_of(connector, table)) == 2


async def test_postgres_creates_the_destination_schema(connect, pg_url: str) -> None:
    connector = await connect("PostgreSQL")
    schema = table_name("cache")
    await connector.create_table("t", COLUMNS, ["id"], schema=schema)
    await connector.write_batch(f"{schema}.t", NAMES, [(1, "x", None)])
    assert [t.schema for t in await connector.list_tables(schema=schema)] == [schema]
    assert await rows_of(connector, "t", schema=schema) == [(1, "x", None)]


@pytest.mark.parametrize("provider", ["PostgreSQL", "SQLite", "MySQL", "DuckDB"])
async def test_views_are_listed_as_views(provider: str, connect) -> None:
    connector = await connect(provider)
    table = await make_table(connector, [(1, "a", None)])
    view = table_name("v")
    await connector.execute(f"CREATE VIEW {view} AS SELECT id, name FROM {table}")
    kinds = {t.name: t.type for t in await connector.list_tables("ALL")}
    assert kinds[view] == "VIEW" and kinds[table] == "TABLE"
    assert view not in {t.name for t in await connector.list_tables("TABLES")}
    assert {t.name for t in await connector.list_tables("VIEWS")} >= {view}
    assert await rows_of(connector, view) == [(1, "a")]


@pytest.mark.parametrize("provider", ["PostgreSQL", "SQLite", "MySQL", "DuckDB"])
async def test_a_query_with_repeated_column_names_reads_as_written(provider: str, connect) -> None:
    connector = await connect(provider)
    table = await make_table(connector, [(1, "a", D("1.50"))])
    columns, batches = await connector.read(f"SELECT t.id, t.name, u.id, u.amount FROM {table} t "
                                            f"JOIN {table} u ON u.id = t.id;", 10)
    assert [c.name for c in columns] == ["id", "name", "id", "amount"]
    assert [row async for batch in batches for row in batch] == [(1, "a", 1, D("1.50"))]


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_table_changes_inside_a_transaction(provider: str, connect) -> None:
    connector = await connect(provider)
    live = await make_table(connector, [(1, "live", None)])
    staging = await make_table(connector, [(1, "staged", None)])
    await connector.begin()
    if provider in ("MySQL", "CSV"):  # they cannot undo it, so they refuse rather than commit behind the caller
        with pytest.raises(BadRequest, match="outside a transaction"):
            await connector.swap_tables(live, staging)
        await connector.rollback()
        return
    await connector.swap_tables(live, staging)
    await connector.drop_table(staging)
    await connector.rollback()
    assert await rows_of(connector, live) == [(1, "live", None)]
    assert await rows_of(connector, staging) == [(1, "staged", None)]


@pytest.mark.parametrize("provider", ["PostgreSQL"])
async def test_a_relaxed_transaction_commits_without_waiting_for_the_disk(provider: str, connect) -> None:
    """Batches commit with synchronous_commit off (a crash loses whole commits only); other commits wait."""
    connector = await connect(provider)
    table = await make_table(connector)
    async with connector.transaction(durable=False):
        await connector.write_batch(table, NAMES, [(1, "one", None)])
        assert await connector.conn.fetchval("SHOW synchronous_commit") == "off"
    async with connector.transaction():
        assert await connector.conn.fetchval("SHOW synchronous_commit") == "on"
    assert await rows_of(connector, table) == [(1, "one", None)]


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_delete_by_an_integer_key_counts_the_rows_gone(provider: str, connect) -> None:
    """Keys twice, keys not there and the extremes of 64 bits (PostgreSQL binds such keys as one array)."""
    connector = await connect(provider)
    table = await make_table(connector, [(i, f"n{i}", None) for i in range(1, 6)])
    assert await connector.delete_keys(table, ["id"], [(2,), (2,), (99,), (-(2**63),), (2**63 - 1,), (4,)]) == 2
    assert [r[0] for r in await rows_of(connector, table)] == [1, 3, 5]
