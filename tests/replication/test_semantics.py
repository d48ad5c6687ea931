"""The replication semantics of the API, one behaviour at a time, on real databases."""

from __future__ import annotations

import datetime as dt
import sqlite3

import asyncpg
import pytest

from odata_sync.connectors import open_connector, passthrough
from odata_sync.replication import (
    CANCELLED,
    FAILED,
    STATE_TABLE,
    SUCCESS,
    TaskStage,
    TaskStarted,
    TaskWarning,
)
from tests.connectors.conftest import server_connection_string
from tests.replication import source as orders
from tests.replication.checksum import checksum
from tests.replication.conftest import make_place, replicate

N = 2_000  # SQLite destinations merge in O(table x batch): keep reconciling tables small


@pytest.fixture
async def sqlite_pair(tmp_path):
    """An ``orders`` source of N rows in SQLite and an empty SQLite destination, both connected."""
    src_place, dst_place = make_place("SQLite", tmp_path), make_place("SQLite", tmp_path)
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    yield src_place.location, dst_place.location, src, dst
    await src.close()
    await dst.close()


def _sql(path, *statements: str) -> None:
    con = sqlite3.connect(path)
    for statement in statements:
        con.execute(statement)
    con.commit()
    con.close()


async def _same(src, dst, table: str = "orders", columns=orders.COLUMNS, dst_table: str | None = None,
                schema: str | None = None) -> tuple[int, int]:
    expected = await checksum(src, table, columns)
    assert await checksum(dst, dst_table or table, columns, schema=schema) == expected
    return expected


def _mode(outcome) -> str:
    return outcome.of(TaskStarted)[0].mode


async def test_force_full_sync_reconciles_what_incremental_cannot_see(sqlite_pair):
    src_path, _dst_path, src, dst = sqlite_pair
    assert (await replicate(src, dst)).task.status == SUCCESS
    # a change that does not move updated_at is invisible to an incremental run; a delete is found by key
    _sql(src_path, "UPDATE orders SET note = 'silent' WHERE id = 10", "DELETE FROM orders WHERE id IN (20, 21)")
    incremental = await replicate(src, dst)
    assert _mode(incremental) == "incremental"
    assert (incremental.task.updated, incremental.task.deleted) == (0, 2)
    full = await replicate(src, dst, force_full=True)
    assert _mode(full) == "reconcile" and full.task.sync_type == "full"
    assert (full.task.inserted, full.task.updated, full.task.deleted) == (0, 1, 0)  # exact: one row changed
    assert full.task.rows_read == N - 2
    await _same(src, dst)
    assert _mode(await replicate(src, dst)) == "incremental"


async def test_skip_deleted_keeps_rows_gone_from_the_source(sqlite_pair):
    src_path, _dst_path, src, dst = sqlite_pair
    await replicate(src, dst, SkipDeleted=True)
    _sql(src_path, "DELETE FROM orders WHERE id <= 5")
    kept = await replicate(src, dst, SkipDeleted=True)
    assert kept.task.deleted == 0 and not kept.of(TaskStage)[1:]  # no key comparison at all
    assert (await checksum(dst, "orders", ["id"]))[0] == N
    removed = await replicate(src, dst, "REPLICATE [orders] WITH SkipDeleted=false", SkipDeleted=True)
    assert removed.task.deleted == 5
    await _same(src, dst)


async def test_drop_table_and_truncate_table_data_force_full_loads(sqlite_pair):
    src_path, dst_path, src, dst = sqlite_pair
    await replicate(src, dst)
    _sql(dst_path, "ALTER TABLE orders ADD COLUMN mine TEXT", "INSERT INTO orders (id, customer) VALUES (-1, 'x')")
    truncated = await replicate(src, dst, TruncateTableData=True)
    assert _mode(truncated) == "load" and truncated.task.inserted == N
    await _same(src, dst)
    assert "mine" in [c.name for c in await dst.list_columns("orders")]  # emptied, not re-created
    dropped = await replicate(src, dst, "REPLICATE [orders] WITH DropTable")
    assert _mode(dropped) == "load" and dropped.task.inserted == N
    assert "mine" not in [c.name for c in await dst.list_columns("orders")]
    await _same(src, dst)
    assert _mode(await replicate(src, dst)) == "incremental"


async def test_no_key_is_refreshed_into_a_staging_table_and_swapped(sqlite_pair):
    src_path, _dst_path, src, dst = sqlite_pair
    _sql(src_path, "CREATE TABLE events (id BIGINT, status VARCHAR(16), updated_at TIMESTAMP)",  # no primary key
         "INSERT INTO events SELECT id, status, updated_at FROM orders")
    first = await replicate(src, dst, "REPLICATE [events]")
    assert _mode(first) == "refresh" and first.task.inserted == N
    assert any("check column 'updated_at' is not used" in w.message for w in first.of(TaskWarning))
    await _same(src, dst, "events", ["id", "status", "updated_at"])
    _sql(src_path, "DELETE FROM events WHERE id > 100", "UPDATE events SET status = 'z' WHERE id = 1")
    second = await replicate(src, dst, "REPLICATE [events]")
    assert _mode(second) == "refresh" and second.task.inserted == 100
    await _same(src, dst, "events", ["id", "status", "updated_at"])
    names = {t.name for t in await dst.list_tables()}
    assert names == {"events", STATE_TABLE}  # no staging table left behind


async def test_select_with_declared_columns_and_key(tmp_path, pg_source_url):
    src_place, dst_place = make_place("PostgreSQL", tmp_path, pg_source_url), make_place("SQLite", tmp_path)
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    query = ("REPLICATE [busy] (id BIGINT, status VARCHAR(16), amount NUMERIC(12,2), updated_at TIMESTAMP, "
             "PRIMARY KEY (id)) SELECT id, status, amount, updated_at FROM [orders] WHERE quantity > 25")
    selected = "SELECT id, status, amount, updated_at FROM orders WHERE quantity > 25"
    columns = ["id", "status", "amount", "updated_at"]
    try:
        first = await replicate(src, dst, query)
        assert first.task.status == SUCCESS, first.task.error
        assert _mode(first) == "load"
        described = {c.name: c for c in await dst.list_columns("busy")}
        assert described["id"].primary_key and str(described["status"].canonical) == "string(16)"
        await _same(src, dst, selected, columns, dst_table="busy")
        await src_place.change_orders(N)
        second = await replicate(src, dst, query)
        assert _mode(second) == "incremental" and second.task.updated > 0 and second.task.deleted > 0
        await _same(src, dst, selected, columns, dst_table="busy")
    finally:
        await src.close()
        await dst.close()


@pytest.mark.parametrize("value", ["'10000-01-01'::date", "'0044-03-15 BC'::date", "'24:00:00'::time"])
async def test_a_value_python_cannot_hold_fails_the_task_not_the_run(tmp_path, pg_source_url, value):
    """PostgreSQL has dates and times beyond Python's: the task reading one fails saying so, the next still runs."""
    src_place, dst_place = make_place("PostgreSQL", tmp_path, pg_source_url), make_place("SQLite", tmp_path)
    await src_place.make_orders(100)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        outcome = await replicate(src, dst, [f"REPLICATE [far] SELECT id, {value} AS v FROM orders",
                                             "REPLICATE [orders]"], ContinueOnError=True)
        far, orders_task = outcome.finished.tasks
        assert far.status == FAILED and "out of range" in far.error, far.error
        assert orders_task.status == SUCCESS, orders_task.error
    finally:
        await src.close()
        await dst.close()


async def test_windowed_initial_load_commits_one_window_at_a_time_and_resumes(sqlite_pair):
    src_path, dst_path, src, dst = sqlite_pair
    # updated_at runs from 2024-01-01 00:00:09 by 9 s: 2,000 rows span five hours
    start = dt.datetime(2024, 1, 1, 1, 0)
    job = {"ReplicateStartDate": "2024-01-01 01:00:00", "ReplicateInterval": 1, "ReplicateIntervalUnit": "hours"}
    stopped = await replicate(src, dst, cancel_after=2, **job)
    assert stopped.finished.status == CANCELLED
    assert [e.mode for e in stopped.of(TaskStarted)] == ["windowed"]
    con = sqlite3.connect(dst_path)
    copied = con.execute("SELECT count(*), min(updated_at), max(updated_at) FROM orders").fetchone()
    state = con.execute(f"SELECT phase, mark FROM {STATE_TABLE}").fetchone()
    con.close()
    assert copied[0] == 800 and copied[1] >= str(start)  # two windows of an hour: 400 rows each
    assert state[0] == "windowed" and state[1].startswith("2024-01-01T03:00:00")

    resumed = await replicate(src, dst, **job)
    assert _mode(resumed) == "windowed" and "resuming" in resumed.of(TaskStarted)[0].reason
    assert resumed.task.inserted == N - 800 - 399  # the rows before the start value are never copied
    where = [("updated_at", ">=", start)]
    assert await checksum(dst, "orders", orders.COLUMNS) == await checksum(src, "orders", orders.COLUMNS,
                                                                           where=where)
    _sql(src_path, "UPDATE orders SET updated_at = '2031-01-01', status = 'late' WHERE id = 1500")
    later = await replicate(src, dst, **job)
    assert _mode(later) == "incremental" and later.task.updated == 1
    forced = await replicate(src, dst, force_full=True, **job)  # a reconcile keeps to the start value too
    assert _mode(forced) == "reconcile" and forced.task.affected == 0 and forced.task.rows_read == N - 399


async def test_cancel_stops_after_a_committed_batch_and_the_next_run_converges(sqlite_pair, monkeypatch):
    _src_path, dst_path, src, dst = sqlite_pair
    monkeypatch.setattr(passthrough, "MIN_CHUNK_ROWS", 1)  # the SQLite pass-through's chunks are BatchSize rows too
    stopped = await replicate(src, dst, ["REPLICATE [orders]", "REPLICATE [orders] WITH DropTable"], cancel_after=1,
                              BatchSize=300)
    finished = stopped.finished
    assert finished.status == CANCELLED and len(finished.tasks) == 1  # the second task never started
    assert finished.tasks[0].status == CANCELLED and finished.tasks[0].inserted == 300
    con = sqlite3.connect(dst_path)
    assert con.execute("SELECT count(*) FROM orders").fetchone()[0] == 300
    assert con.execute(f"SELECT phase FROM {STATE_TABLE}").fetchone()[0] == "loading"
    con.close()
    again = await replicate(src, dst)
    assert _mode(again) == "load" and again.task.inserted == N  # the unfinished load starts over
    await _same(src, dst)


async def test_failed_task_and_continue_on_error(sqlite_pair):
    _src_path, _dst_path, src, dst = sqlite_pair
    queries = ["REPLICATE [missing]", "REPLICATE [orders]"]
    going_on = await replicate(src, dst, queries)
    assert [t.status for t in going_on.finished.tasks] == [FAILED, SUCCESS]
    assert "missing" in going_on.finished.tasks[0].error and going_on.finished.status == FAILED
    stopped = await replicate(src, dst, queries, ContinueOnError=False)
    assert [t.status for t in stopped.finished.tasks] == [FAILED]
    bad = await replicate(src, dst, "REPLICATE [orders] WITH Nonsense=1")
    assert bad.task.status == FAILED and "unknown option" in bad.task.error


async def test_integer_check_column_for_append_only_tables(sqlite_pair):
    src_path, _dst_path, src, dst = sqlite_pair
    job = {"OtherCacheOptions": "IncrementalCheckColumns=id"}
    await replicate(src, dst, **job)
    _sql(src_path, "INSERT INTO orders (id, customer) VALUES (5000, 'new'), (5001, 'newer')")
    incremental = await replicate(src, dst, **job)
    assert _mode(incremental) == "incremental" and incremental.task.inserted == 2
    assert incremental.task.rows_read == 3  # the mark's own row and the two new ones: integer marks get no lookback
    await _same(src, dst)


async def test_prefix_and_cache_schema(tmp_path, pg_destination_url):
    src_place = make_place("SQLite", tmp_path)
    await src_place.make_orders(N)
    src = src_place.connector()
    dst = open_connector("PostgreSQL", server_connection_string(pg_destination_url))
    try:
        job = {"TableNamePrefix": "crm_", "CacheSchema": "raw"}
        first = await replicate(src, dst, **job)
        assert first.task.status == SUCCESS, first.task.error
        assert first.task.table == "raw.crm_orders"
        await _same(src, dst, dst_table="crm_orders", schema="raw")
        assert {t.name for t in await dst.list_tables(schema="raw")} == {"crm_orders", STATE_TABLE}
        assert _mode(await replicate(src, dst, **job)) == "incremental"
    finally:
        await src.close()
        await dst.close()


async def test_alter_schema_adds_columns_and_widens_types(tmp_path, pg_source_url, pg_destination_url):
    src_place = make_place("PostgreSQL", tmp_path, pg_source_url)
    await src_place.make_orders(N)
    src = src_place.connector()
    dst = open_connector("PostgreSQL", server_connection_string(pg_destination_url))
    columns = [*orders.COLUMNS, "extra"]
    try:
        await replicate(src, dst)
        conn = await asyncpg.connect(pg_source_url)
        await conn.execute("ALTER TABLE orders ADD COLUMN extra INTEGER")
        await conn.execute("UPDATE orders SET extra = id % 7")  # updated_at unchanged: only a full read sees it
        await conn.execute("ALTER TABLE orders ALTER COLUMN status TYPE VARCHAR(40), ALTER COLUMN quantity TYPE BIGINT")
        await conn.execute("UPDATE orders SET status = 'a status longer than sixteen', updated_at = '2031-01-01' "
                           "WHERE id = 3")
        kept = await replicate(src, dst, AlterSchema=False)
        assert kept.task.status == FAILED  # status is too long for varchar(16) and nothing may widen it
        assert "extra" not in [c.name for c in await dst.list_columns("orders")]
        await conn.execute("UPDATE orders SET quantity = 9999999999 WHERE id = 3")
        await conn.close()
        evolved = await replicate(src, dst)
        assert evolved.task.status == SUCCESS, evolved.task.error
        warnings = " ".join(w.message for w in evolved.of(TaskWarning))
        assert "column 'extra' (int32) added" in warnings
        assert "'status' widened from string(16) to string(40)" in warnings
        assert "'quantity' widened from int32 to int64" in warnings
        assert evolved.task.sync_type == "full" and evolved.task.updated == N  # every row got its 'extra'
        await _same(src, dst, columns=columns)
        assert _mode(await replicate(src, dst)) == "incremental"
    finally:
        await src.close()
        await dst.close()


async def test_auto_truncate_strings(tmp_path, pg_source_url, pg_destination_url):
    src_place = make_place("PostgreSQL", tmp_path, pg_source_url)
    await src_place.make_orders(200)
    src = src_place.connector()
    dst = open_connector("PostgreSQL", server_connection_string(pg_destination_url))
    conn = await asyncpg.connect(pg_destination_url)
    await conn.execute("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(8), status TEXT)")
    await conn.close()
    try:
        query = "REPLICATE [orders] SELECT id, customer, status FROM orders"
        refused = await replicate(src, dst, [query, "REPLICATE [orders2] SELECT id FROM orders"], AlterSchema=False)
        assert [t.status for t in refused.finished.tasks] == [FAILED, SUCCESS]
        assert "too long" in refused.finished.tasks[0].error
        assert refused.finished.tasks[0].failed == 200
        cut = await replicate(src, dst, query, AlterSchema=False, AutoTruncateStrings=True)
        assert cut.task.status == SUCCESS, cut.task.error
        assert any("200 values of column 'customer' were cut" in w.message for w in cut.of(TaskWarning))
        _count, total = await checksum(dst, "orders", ["customer"])
        rows = [r async for batch in (await dst.read("orders", 500, columns=["customer"]))[1] for r in batch]
        assert {len(r[0]) for r in rows} == {8} and total
    finally:
        await src.close()
        await dst.close()


async def test_timestamptz_marks_keep_microseconds(tmp_path, pg_source_url):
    dst = make_place("DuckDB", tmp_path).connector()
    src = open_connector("PostgreSQL", server_connection_string(pg_source_url))
    conn = await asyncpg.connect(pg_source_url)
    await conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT, modified TIMESTAMPTZ)")
    await conn.execute("INSERT INTO t SELECT i, 'v', TIMESTAMPTZ '2024-05-01 12:00:00+05:30' + i * INTERVAL "
                       "'1 microsecond' FROM generate_series(1, 10) i")
    try:
        job = {"OtherCacheOptions": "IncrementalLookback=0"}
        await replicate(src, dst, "REPLICATE [t]", **job)
        await conn.execute("UPDATE t SET v = 'w', modified = modified + INTERVAL '7 microseconds' WHERE id = 4")
        incremental = await replicate(src, dst, "REPLICATE [t]", **job)
        assert _mode(incremental) == "incremental"
        # the mark is row 10's instant to the microsecond: rows 10 (the mark itself) and 4 (1 µs later) are read
        assert incremental.task.rows_read == 2 and incremental.task.updated == 1
        await _same(src, dst, "t", ["id", "v", "modified"])
    finally:
        await conn.close()
        await src.close()
        await dst.close()
