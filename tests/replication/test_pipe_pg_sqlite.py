"""PostgreSQL → SQLite pass-through loads (connectors.pg_sqlite_pipe): values rendered by PostgreSQL as the normal
path stores them, COPY text split and inserted by SQLite, one transaction per page range."""

from __future__ import annotations

import sqlite3

import pytest

from odata_sync.connectors import open_connector, passthrough, pg_sqlite_pipe
from odata_sync.replication import (
    CANCELLED,
    FAILED,
    SUCCESS,
    BatchCommitted,
    TaskStage,
)
from tests.databases import pg_execute
from tests.replication import source as orders
from tests.replication.checksum import checksum, duplicate_keys
from tests.replication.conftest import PIPE_CHUNK as CHUNK
from tests.replication.conftest import change_and_converge, load_again_converges, make_place, piped, replicate

N = 12_000

AWKWARD = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE awkward (
    id integer PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, n numeric,
    n2 numeric(12,2), n3 numeric(40,20), b boolean, t text, vc varchar(20), ch char(5), d date, tm time,
    ts timestamp, ts3 timestamp(3), tz timestamptz, u uuid, j json, jb jsonb, by bytea, arr integer[],
    tarr text[], iv interval, m mood, updated_at timestamp NOT NULL DEFAULT '2024-01-01',
    "odd ""name"", too" text DEFAULT 'x');
CREATE VIEW awkward_view AS SELECT * FROM awkward WHERE id < 1000;
INSERT INTO awkward (id) VALUES (1);
INSERT INTO awkward VALUES
 (2, 0, 0, 0, 0.1, 0.1, 0, 0.00, 0, false, '', '', '', '2000-02-29', '00:00:00', '2024-01-01 00:00:00',
  '2024-01-01 00:00:00.5', '2024-06-01 12:00:00+02', '00000000-0000-0000-0000-000000000000', '{}', '{}', '',
  '{}', '{}', '0', 'sad', '2024-01-02'),
 (3, 32767, 2147483647, 9223372036854775807, 3.4028235e38, 1.7976931348623157e308, 'NaN', 9999999999.99,
  12345678901234567890.12345678901234567890, true, E'tab\\there\\nnew line\\\\back\\rslash', '\\N', 'ab',
  '0001-01-01', '23:59:59.999999', '9999-12-31 23:59:59.999999', '2024-02-29 23:59:59.123', 'infinity',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50, "x\\ty"], "b": null}', '{"a": [1, 2.50, "x\\ty"]}',
  '\\x00ff0a5c', '{1,NULL,3}', E'{"a\\tb","c\\\\d",NULL,""}', '1 day 02:03:04.5', 'happy', '2024-01-03'),
 (4, -32768, -2147483648, -9223372036854775808, 1e-45, 5e-324, 'Infinity', -0.01, -1e-20, NULL,
  E'quote''s "dq" ünïcødé 😀 \\x01', ' x ', 'abcde', '9999-12-31', '10:00:00.5', '0001-01-01 00:00:00',
  '1999-12-31 23:59:59.999', '-infinity', NULL, '123', '1.50', NULL, NULL, NULL, NULL, NULL, '2024-01-04'),
 (5, 1, 1, 1, -0.0, -0.0, '-Infinity', 1.50, 1.5, true, '\\N', E'\\\\N', 'x', 'infinity', '12:34:56',
  'infinity', '-infinity', '0001-01-01 00:00:00+00', NULL, '"x"', '"x"', '\\x', NULL, NULL, NULL, NULL,
  '2024-01-05'),
 (6, NULL, NULL, NULL, 'NaN', 'NaN', 1e30, 0.10, 0.00000000000000000001, false, E'a\\\\', 'end\\', NULL,
  '-infinity', NULL, '-infinity', NULL, '2024-06-01 23:30:00-05:30', NULL, 'null', 'null', NULL, NULL, NULL,
  NULL, NULL, '2024-01-06'),
 (7, NULL, NULL, NULL, 'Infinity', '-Infinity', -123.456, NULL, NULL, NULL, E'\\r\\n', '\\Nx', NULL, NULL,
  NULL, '2024-01-01 12:00:00.000001', NULL, '9999-12-31 23:59:59.999999+00', NULL, '[1.0, 2e3]',
  '[1.0, 2e3]', NULL, NULL, NULL, NULL, NULL, '2024-01-07'),
 (8, NULL, NULL, NULL, 1.17549435e-38, 2.2250738585072014e-308, 0.1, NULL, NULL, NULL, 'plain', E'\\x0b', NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2024-01-08');
INSERT INTO awkward (id, f8, t, ts, n, updated_at)
SELECT g, (g * 1.1) / 7.3e10, repeat(chr(9) || 'x\\', g % 5), '2024-01-01'::timestamp + g * interval '1.001 second',
       g / 7.0, '2024-02-01'
FROM generate_series(100, 2100) g;
"""


def stored(path, table: str) -> list[tuple]:
    """Every value as Python reads it back (repr keeps -0.0 and a float's last digit) with its storage class."""
    with sqlite3.connect(path) as conn:
        names = ['"' + r[1].replace('"', '""') + '"' for r in conn.execute(f'PRAGMA table_info("{table}")')]
        select = ", ".join(f"{n}, typeof({n})" for n in names)
        return [tuple(repr(v) for v in row) for row in conn.execute(f'SELECT {select} FROM "{table}" ORDER BY 1')]


async def load_both(monkeypatch, tmp_path, url: str, query: str) -> tuple[list, list]:
    """The destination table after a piped load and after a load with the pipe disabled."""
    results = []
    for use_pipe in (True, False):
        if not use_pipe:
            monkeypatch.setattr(passthrough, "_PAIRS", {})
        src = make_place("PostgreSQL", tmp_path, url).connector()
        dst_place = make_place("SQLite", tmp_path)
        dst = dst_place.connector()
        try:
            outcome = await replicate(src, dst, query)
        finally:
            await src.close()
            await dst.close()
        results.append((outcome, dst_place.location))
    return results[0], results[1]


@pytest.mark.parametrize("datestyle", ["ISO, MDY", "SQL, DMY"])
async def test_pipe_stores_what_the_normal_path_stores(pg_source_url, tmp_path, monkeypatch, datestyle):
    """Byte for byte, storage class included: NULLs, COPY escapes, extreme integers, doubles (NaN, infinities,
    -0.0, subnormals), numerics, infinite and extreme dates and times, uuid, json, bytea, arrays, enum, interval;
    under an ISO DateStyle (timestamps from their own text) and another one (from ``to_char``)."""
    await pg_execute(pg_source_url, f"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', "
                                 f"current_database(), '{datestyle}'); END $$")
    await pg_execute(pg_source_url, AWKWARD)
    (piped_load, piped_path), (normal_load, normal_path) = await load_both(
        monkeypatch, tmp_path, pg_source_url, "REPLICATE [awkward]")
    assert piped_load.task.status == SUCCESS, piped_load.task.error
    assert normal_load.task.status == SUCCESS, normal_load.task.error
    assert piped(piped_load) and not piped(normal_load)
    with_pipe, without = stored(piped_path, "awkward"), stored(normal_path, "awkward")
    assert len(with_pipe) == 2_009
    for mine, theirs in zip(with_pipe, without, strict=True):
        assert mine == theirs


async def test_a_view_is_stored_as_the_normal_path_stores_it(pg_source_url, tmp_path, monkeypatch):
    await pg_execute(pg_source_url, AWKWARD)
    query = "REPLICATE [awkward_view] (PRIMARY KEY (id))"
    (piped_load, piped_path), (normal_load, normal_path) = await load_both(monkeypatch, tmp_path, pg_source_url,
                                                                           query)
    assert piped_load.task.status == SUCCESS, piped_load.task.error
    assert piped(piped_load)
    assert stored(piped_path, "awkward_view") == stored(normal_path, "awkward_view")
    assert len(stored(piped_path, "awkward_view")) == 8 + 900


async def test_highest_is_the_normal_paths_mark(pg_source_url, tmp_path):
    """``highest`` of each kind a check column may have equals the maximum of the values the normal path reads
    (text by code point, whatever the database's collation)."""
    await pg_execute(pg_source_url, "CREATE TABLE h (id integer PRIMARY KEY, i bigint, n numeric(10,3), f float8, "
                                 "t text, v varchar(5), b bytea, d date, ts timestamp, tz timestamptz, tm time, "
                                 "e int);"
                                 "INSERT INTO h VALUES (1, 5, 1.500, 0.1, 'a', 'Zz', '\\x00', '2024-01-01', "
                                 "'2024-01-01 10:00:00.5', '2024-01-01 10:00:00+02', '10:00:00', NULL), "
                                 "(2, -7, 12.250, -1e300, 'B', 'zz', '\\xff00', '1999-12-31', 'infinity', "
                                 "'2024-01-01 09:00:00+00', '23:59:59.5', NULL), "
                                 "(3, NULL, NULL, NULL, 'é', NULL, '\\xff', NULL, NULL, NULL, NULL, NULL)")
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst = make_place("SQLite", tmp_path).connector()
    try:
        columns = await src.list_columns("h")
        await dst.create_table("h", columns, ["id"])
        transfer = passthrough.Transfer("h", None, columns, "h", None, await dst.list_columns("h"), 1_000)
        read_columns, batches = await src.read("h", 100)
        rows = [row async for batch in batches for row in batch]
        pipe = await passthrough.open_pipe(src, dst, transfer)
        assert pipe is not None
        async with pipe:
            for i, column in enumerate(read_columns):
                present = [row[i] for row in rows if row[i] is not None]
                assert await pipe.highest(column.name) == (max(present) if present else None), column.name
    finally:
        await src.close()
        await dst.close()


async def test_pipe_into_an_existing_table_of_other_affinities(pg_source_url, tmp_path, monkeypatch):
    """A destination made beforehand with declared types of other affinities (booleans into BLOB and REAL ones, a
    double into a BLOB one, text into NUMERIC JSON, decimals into NUMERIC): still stored as the normal path does."""
    await pg_execute(pg_source_url, "CREATE TABLE t (id integer PRIMARY KEY, a bigint, f float8, s text, b boolean, "
                                 "c boolean, n numeric(6,2)); "
                                 "INSERT INTO t VALUES (1, 5, 2.0, '12', true, true, 12.50), "
                                 "(2, NULL, 0.5, '1e3', false, false, NULL), (3, -7, 'Infinity', 'x', NULL, true, 0)")
    results = []
    for use_pipe in (True, False):
        if not use_pipe:
            monkeypatch.setattr(passthrough, "_PAIRS", {})
        path = tmp_path / f"existing_{use_pipe}.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a BIGINT, f FLOAT4 BLOB, s JSON, b BOOLEAN BLOB, "
                         "c BOOL REAL, n DECIMAL(6,2))")
        src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
        dst = open_connector("SQLite", f"Database={path}")
        try:
            outcome = await replicate(src, dst, "REPLICATE [t]", TruncateTableData=True)
        finally:
            await src.close()
            await dst.close()
        assert outcome.task.status == SUCCESS, outcome.task.error
        assert bool(piped(outcome)) is use_pipe
        results.append(stored(path, "t"))
    assert results[0] == results[1]
    assert [row[8:12] for row in results[0]] == [("1", "'integer'", "1.0", "'real'"), ("0", "'integer'", "0.0", "'real'"),
                                                 ("None", "'null'", "1.0", "'real'")]


@pytest.mark.parametrize("value, column", [("'10000-01-01'::date", "date"), ("'0044-03-15 BC'::date", "date"),
                                           ("'24:00:00'::time", "time"),
                                           ("'10000-01-01'::timestamp", "timestamp"),
                                           ("'0001-01-01 00:00:00+05'::timestamptz", "timestamptz")])
async def test_a_value_python_cannot_hold_fails_as_in_the_normal_path(pg_source_url, tmp_path, monkeypatch, value,
                                                                     column):
    """asyncpg cannot read these values, so the normal path fails on them (today with the driver's ValueError or
    OverflowError, which escapes the run); the pipe fails the task with what is wrong and stores nothing."""
    await pg_execute(pg_source_url, f"CREATE TABLE odd (id integer PRIMARY KEY, v {column}); "
                                 f"INSERT INTO odd VALUES (1, NULL), (2, {value})")
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst_place = make_place("SQLite", tmp_path)
    dst = dst_place.connector()
    try:
        outcome = await replicate(src, dst, "REPLICATE [odd]")
        assert outcome.task.status == FAILED
        assert piped(outcome)
        assert "outside the range of Python's date and time types" in outcome.task.error, outcome.task.error
        with sqlite3.connect(dst_place.location) as conn:
            assert conn.execute("SELECT count(*) FROM odd").fetchone() == (0,)  # the chunk was rolled back

        monkeypatch.setattr(passthrough, "_PAIRS", {})
        try:
            normal = await replicate(src, dst, "REPLICATE [odd]")
        except (ValueError, OverflowError):
            pass
        else:
            assert normal.task.status == FAILED
    finally:
        await src.close()
        await dst.close()


async def test_unsupported_types_go_the_normal_way(pg_source_url, tmp_path):
    """A column whose value the destination converts (a declared type of another kind) means no pipe."""
    await pg_execute(pg_source_url, "CREATE TABLE t (id integer, n numeric(10,2)); INSERT INTO t VALUES (1, 2.50)")
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst_place = make_place("SQLite", tmp_path)
    dst = dst_place.connector()
    try:
        outcome = await replicate(src, dst, "REPLICATE [t] (id TEXT, n DOUBLE) SELECT id, n FROM t")
        assert outcome.task.status == SUCCESS, outcome.task.error
        assert not piped(outcome)
    finally:
        await src.close()
        await dst.close()
    with sqlite3.connect(dst_place.location) as conn:
        assert conn.execute("SELECT id, typeof(id), n FROM t").fetchall() == [("1", "text", 2.5)]


@pytest.mark.parametrize("snapshot", [True, False], ids=["exported snapshot", "no snapshot"])
async def test_chunked_load_then_incremental_converges(pg_source_url, tmp_path, small_chunks, monkeypatch, snapshot):
    """Many chunks, then changes and an incremental run reading only them (the mark is right); without an exported
    snapshot (a server that refuses it) ``highest`` reads on the copy's own connection after it."""
    if not snapshot:
        monkeypatch.setattr(pg_sqlite_pipe, "_EXPORT", "SELECT no_such_function()")
    src_place = make_place("PostgreSQL", tmp_path, pg_source_url)
    dst_place = make_place("SQLite", tmp_path)
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        full = await replicate(src, dst, BatchSize=CHUNK)
        assert full.task.status == SUCCESS, full.task.error
        assert len(piped(full)) == 1 and "COPY" in piped(full)[0], [e.stage for e in full.of(TaskStage)]
        commits = full.of(BatchCommitted)
        assert [c.rows for c in commits] == [CHUNK] * (N // CHUNK)  # one commit per chunk, exactly its rows
        assert (full.task.inserted, full.task.rows_read) == (N, N)
        assert await checksum(src, "orders", orders.COLUMNS) == await checksum(dst, "orders", orders.COLUMNS)

        # the mark saved by the piped load is right: the incremental run reads only the changed rows
        await change_and_converge(src_place, src, dst, N, BatchSize=CHUNK)
    finally:
        await src.close()
        await dst.close()


async def test_cancelled_load_leaves_whole_chunks_and_is_redone(pg_source_url, tmp_path, small_chunks):
    src_place = make_place("PostgreSQL", tmp_path, pg_source_url)
    dst_place = make_place("SQLite", tmp_path)
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        stopped = await replicate(src, dst, cancel_after=1, BatchSize=CHUNK)
        assert stopped.finished.status == CANCELLED
        committed = sum(e.rows for e in stopped.of(BatchCommitted))
        copied = (await checksum(dst, "orders", ["id"]))[0]
        assert 0 < copied < N and copied == committed and copied % CHUNK == 0
        assert await duplicate_keys(dst, "orders", "id") == 0

        await load_again_converges(src, dst, BatchSize=CHUNK)
    finally:
        await src.close()
        await dst.close()


async def test_failing_chunk_rolls_back_alone_and_the_next_run_converges(pg_source_url, tmp_path, small_chunks):
    """A load that fails leaves the chunks committed before the failure, whole, and nothing of the failing one; once
    the cause is gone the next run loads everything. First a row the destination refuses (a duplicate key, written
    last), then a source value Python cannot hold, in the middle of the table."""
    src_place = make_place("PostgreSQL", tmp_path, pg_source_url)
    dst_place = make_place("SQLite", tmp_path)
    await src_place.make_orders(N)
    await pg_execute(pg_source_url, "ALTER TABLE orders DROP CONSTRAINT orders_pkey; "
                                 "INSERT INTO orders SELECT * FROM orders WHERE id = 5")
    src, dst = src_place.connector(), dst_place.connector()
    query = "REPLICATE [orders] (PRIMARY KEY (id))"
    try:
        failed = await replicate(src, dst, query, BatchSize=CHUNK)
        assert failed.task.status == FAILED and "unique" in failed.task.error.lower(), failed.task.error
        assert sum(e.rows for e in failed.of(BatchCommitted)) == N  # every chunk before the duplicate's
        assert (await checksum(dst, "orders", ["id"]))[0] == N

        await pg_execute(pg_source_url, "DELETE FROM orders WHERE ctid = (SELECT max(ctid) FROM orders WHERE id = 5); "
                                     "CREATE TABLE rebuilt AS SELECT id, customer, status, amount, quantity, priority, "
                                     "CASE WHEN id = 6500 THEN '10000-01-01' ELSE created_at END AS created_at, "
                                     "updated_at, note, region FROM orders ORDER BY id; "
                                     "DROP TABLE orders; ALTER TABLE rebuilt RENAME TO orders")
        broken = await replicate(src, dst, query, BatchSize=CHUNK)
        assert broken.task.status == FAILED and "outside the range" in broken.task.error, broken.task.error
        committed = sum(e.rows for e in broken.of(BatchCommitted))
        # whole chunks before the bad row (asyncpg drops the rows that arrive in the same read as the error)
        assert 0 < committed <= 6 * CHUNK and committed % CHUNK == 0
        assert (await checksum(dst, "orders", ["id"]))[0] == committed

        await pg_execute(pg_source_url, "UPDATE orders SET created_at = '2024-01-01' WHERE id = 6500")
        again = await replicate(src, dst, query, BatchSize=CHUNK)
        assert again.task.status == SUCCESS, again.task.error
        assert await checksum(src, "orders", orders.COLUMNS) == await checksum(dst, "orders", orders.COLUMNS)
    finally:
        await src.close()
        await dst.close()


async def test_rows_longer_than_a_piece_and_an_empty_table(pg_source_url, tmp_path, monkeypatch):
    """A value of several pieces' size (escapes inside) arrives whole; an empty table loads as nothing."""
    await pg_execute(pg_source_url, "CREATE TABLE big (id integer PRIMARY KEY, t text, b bytea); "
                                 "INSERT INTO big SELECT g, repeat(E'ab\\tc\\\\', 100000 * g), "
                                 "decode(repeat('00ff', 50000 * g), 'hex') FROM generate_series(1, 3) g; "
                                 "INSERT INTO big SELECT g, 'x', NULL FROM generate_series(4, 5000) g; "
                                 "CREATE TABLE empty (id integer PRIMARY KEY, t text)")
    (piped_load, piped_path), (_normal, normal_path) = await load_both(monkeypatch, tmp_path, pg_source_url,
                                                                       "REPLICATE [big]")
    assert piped_load.task.status == SUCCESS and piped(piped_load), piped_load.task.error
    assert stored(piped_path, "big") == stored(normal_path, "big")
    with sqlite3.connect(piped_path) as conn:
        assert conn.execute("SELECT length(t), length(b) FROM big WHERE id = 3").fetchone() == (1_500_000, 300_000)

    monkeypatch.undo()
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst_place = make_place("SQLite", tmp_path)
    dst = dst_place.connector()
    try:
        outcome = await replicate(src, dst, "REPLICATE [empty]")
        assert outcome.task.status == SUCCESS and piped(outcome), outcome.task.error
        assert outcome.task.rows_read == 0
    finally:
        await src.close()
        await dst.close()
