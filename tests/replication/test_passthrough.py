"""Same-engine pass-through loads (connectors.passthrough): PostgreSQL → PostgreSQL binary COPY in page-range chunks
over two connection pairs, SQLite → SQLite through an attached file; the primary key built after the load."""

from __future__ import annotations

import random
import sqlite3
import struct

import asyncpg
import pytest

from odata_sync.connectors import open_connector, passthrough
from odata_sync.replication import (
    CANCELLED,
    FAILED,
    SUCCESS,
    BatchCommitted,
    TaskStage,
    TaskStarted,
)
from tests.databases import pg_execute, pg_fetch
from tests.replication import source as orders
from tests.replication.checksum import checksum, duplicate_keys
from tests.replication.conftest import PIPE_CHUNK as CHUNK
from tests.replication.conftest import change_and_converge, load_again_converges, make_place, piped, replicate

N = 12_000


def merged(outcome) -> list[str]:
    return [e.stage for e in outcome.of(TaskStage) if "changed rows copied without conversion" in e.stage]


async def key_columns(connector, table: str) -> list[str]:
    return [c.name for c in await connector.list_columns(table) if c.primary_key]


@pytest.mark.parametrize("source, destination", [("PostgreSQL", "PostgreSQL"), ("SQLite", "SQLite")],
                         ids=["PostgreSQL", "SQLite"])
async def test_pipe_copies_in_chunks_and_converges(places, small_chunks, source, destination):
    src_place, dst_place = places
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        full = await replicate(src, dst, BatchSize=CHUNK)
        assert full.task.status == SUCCESS, full.task.error
        assert len(piped(full)) == 1, [e.stage for e in full.of(TaskStage)]
        commits = full.of(BatchCommitted)
        assert len(commits) >= N // CHUNK // 2 and sum(c.rows for c in commits) == N  # one commit per chunk
        assert (full.task.inserted, full.task.rows_read) == (N, N)
        assert await checksum(src, "orders", orders.COLUMNS) == await checksum(dst, "orders", orders.COLUMNS)
        assert await key_columns(dst, "orders") == ["id"]

        # the mark saved by the piped load is right: the incremental run reads only the changed rows
        incremental = await change_and_converge(src_place, src, dst, N, BatchSize=CHUNK)
        updated, inserted, deleted = orders.change_counts(N)
        assert (incremental.task.updated, incremental.task.inserted, incremental.task.deleted) == \
            (updated, inserted - len(range(3, inserted + 1, 1000)), deleted)
        # PostgreSQL stages the changed rows in the destination without converting them, a commit per batch
        assert bool(merged(incremental)) == (source == "PostgreSQL"), [e.stage for e in incremental.of(TaskStage)]
        assert len(incremental.of(BatchCommitted)) == -(-incremental.task.rows_read // CHUNK)
    finally:
        await src.close()
        await dst.close()


async def test_different_types_go_the_normal_way(pg_source_url, pg_destination_url, tmp_path):
    """A declared column type that differs from the source's: no pipe, the rows are converted, the key still comes."""
    src_place = make_place("PostgreSQL", tmp_path, pg_source_url)
    dst_place = make_place("PostgreSQL", tmp_path, pg_destination_url)
    await src_place.make_orders(2_000)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        query = "REPLICATE [copy] (id INTEGER, customer TEXT, PRIMARY KEY (id)) SELECT id, customer FROM orders"
        full = await replicate(src, dst, query)
        assert full.task.status == SUCCESS, full.task.error
        assert not piped(full)
        assert (await dst.list_columns("copy"))[0].native_type == "integer"
        assert await checksum(src, "orders", ["id", "customer"]) == await checksum(dst, "copy", ["id", "customer"])
        assert await key_columns(dst, "copy") == ["id"]

        # an incremental run into a table whose column type differs: the changed rows are read, not staged
        assert (await replicate(src, dst)).task.status == SUCCESS
        await dst.execute('ALTER TABLE orders ALTER COLUMN quantity TYPE bigint')
        await src_place.change_orders(2_000)
        incremental = await replicate(src, dst)
        assert incremental.of(TaskStarted)[0].mode == "incremental" and not merged(incremental)
        assert incremental.task.status == SUCCESS, incremental.task.error
        assert await checksum(src, "orders", orders.COLUMNS) == await checksum(dst, "orders", orders.COLUMNS)
    finally:
        await src.close()
        await dst.close()


async def test_duplicate_keys_fail_the_load_clearly(pg_source_url, pg_destination_url, tmp_path):
    """The key is built after the rows are in: a source with duplicate keys fails there, with PostgreSQL's message,
    and the next run tries the whole load again (the state still says loading)."""
    conn = await asyncpg.connect(pg_source_url)
    try:
        await conn.execute("CREATE TABLE dups (id integer, v text); "
                           "INSERT INTO dups SELECT g % 50, 'v' || g FROM generate_series(1, 100) g")
    finally:
        await conn.close()
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst = make_place("PostgreSQL", tmp_path, pg_destination_url).connector()
    try:
        failed = await replicate(src, dst, "REPLICATE [dups] (PRIMARY KEY (id))")
        assert failed.task.status == FAILED
        assert "duplicate" in failed.task.error.lower() or "unique" in failed.task.error.lower(), failed.task.error
        again = await replicate(src, dst, "REPLICATE [dups] (PRIMARY KEY (id))")
        assert again.of(TaskStarted)[0].reason.startswith("the previous full load did not finish")
        assert again.task.status == FAILED
    finally:
        await src.close()
        await dst.close()


async def test_cancelled_piped_load_is_redone_and_gets_its_key(pg_source_url, pg_destination_url, tmp_path,
                                                               small_chunks):
    """A load stopped after its first chunk leaves whole chunks and no key; the next run loads again from empty and
    builds the key."""
    src_place = make_place("PostgreSQL", tmp_path, pg_source_url)
    dst_place = make_place("PostgreSQL", tmp_path, pg_destination_url)
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        stopped = await replicate(src, dst, cancel_after=1, BatchSize=CHUNK)
        assert stopped.finished.status == CANCELLED
        copied = (await checksum(dst, "orders", ["id"]))[0]
        assert 0 < copied < N and await duplicate_keys(dst, "orders", "id") == 0
        assert await key_columns(dst, "orders") == []

        await load_again_converges(src, dst, BatchSize=CHUNK)
        assert await key_columns(dst, "orders") == ["id"]
    finally:
        await src.close()
        await dst.close()


async def test_sqlite_without_rowid_source_goes_in_one_statement(tmp_path):
    path = tmp_path / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID")
        conn.executemany("INSERT INTO kv VALUES (?, ?)", [(f"k{i:05d}", i) for i in range(3_000)])
    src = open_connector("SQLite", f"Database={path}")
    dst = make_place("SQLite", tmp_path).connector()
    try:
        full = await replicate(src, dst, "REPLICATE [kv]")
        assert full.task.status == SUCCESS, full.task.error
        assert piped(full) and "1 chunk(s)" in piped(full)[0]
        assert await checksum(src, "kv", ["k", "v"]) == await checksum(dst, "kv", ["k", "v"])
    finally:
        await src.close()
        await dst.close()


async def test_sqlite_pipe_stores_what_the_normal_path_stores(tmp_path, monkeypatch):
    """Byte for byte (storage class included): awkward doubles in a DECIMAL column, integers and text decimals,
    timestamps with and without fractions or a 'T', booleans as 0/1 and as text, NULLs everywhere."""
    rng = random.Random(7)
    doubles = [round(rng.uniform(-1e6, 1e6), rng.randrange(0, 8)) for _ in range(3_000)] + \
              [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(3_000)] + \
              [0.1 + 0.2, 1e15, 1e16, 123456789012345.6, 5.0, 1e-5, 0.0001, -0.0, 0.0, 7, "12.50", "1e3", None]
    doubles = [d for d in doubles if not (isinstance(d, float) and (d != d or abs(d) == float("inf")))]
    stamps = ["2024-01-01 00:00:07", "2024-01-01 00:00:07.123456", "2024-01-01T10:00:00", "2024-02-29 23:59:59.5",
              None]
    flags = [0, 1, None, True, "true"]
    path = tmp_path / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, amount NUMERIC(20,6), at TIMESTAMP, flag BOOLEAN, "
                     "label VARCHAR(10))")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                         [(i, d, stamps[i % len(stamps)], flags[i % len(flags)], None if i % 3 else f"l{i}")
                          for i, d in enumerate(doubles, 1)])
    stored = []
    for use_pipe in (True, False):
        if not use_pipe:
            monkeypatch.setattr(passthrough, "_PAIRS", {})
        target = tmp_path / f"dst_{use_pipe}.db"
        src, dst = open_connector("SQLite", f"Database={path}"), open_connector("SQLite", f"Database={target}")
        try:
            outcome = await replicate(src, dst, "REPLICATE [t]")
            assert outcome.task.status == SUCCESS, outcome.task.error
            assert bool(piped(outcome)) is use_pipe
        finally:
            await src.close()
            await dst.close()
        with sqlite3.connect(target) as conn:
            stored.append(conn.execute("SELECT id, amount, typeof(amount), at, typeof(at), flag, typeof(flag), label "
                                       "FROM t ORDER BY id").fetchall())
    assert len(stored[0]) == len(doubles)
    assert stored[0] == stored[1]


async def test_staged_merge_with_a_key_twice_or_no_unique_index(pg_source_url, pg_destination_url, tmp_path):
    """A source table without a primary key may stage a key twice: its later row wins. A destination table without
    a unique index on the key (made elsewhere) merges its batches by delete and insert."""
    await pg_execute(pg_source_url,
               "CREATE TABLE nokey (id integer NOT NULL, v text, updated_at timestamp); "
               "INSERT INTO nokey SELECT g, 'v' || g, TIMESTAMP '2024-01-01' + g * INTERVAL '1 second' "
               "FROM generate_series(1, 300) g; "
               "CREATE TABLE keyed (id integer PRIMARY KEY, v text, updated_at timestamp); "
               "INSERT INTO keyed SELECT g, 'v' || g, TIMESTAMP '2024-01-01' + g * INTERVAL '1 second' "
               "FROM generate_series(1, 300) g")
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst = make_place("PostgreSQL", tmp_path, pg_destination_url).connector()
    try:
        for query in ("REPLICATE [nokey] (PRIMARY KEY (id))", "REPLICATE [keyed]"):
            assert (await replicate(src, dst, query)).task.status == SUCCESS
        await pg_execute(pg_source_url,
                   "INSERT INTO nokey VALUES (7, 'first', '2030-01-01'), (7, 'second', '2030-01-02'); "
                   "UPDATE keyed SET v = 'changed', updated_at = '2030-01-01' WHERE id % 10 = 0; "
                   "INSERT INTO keyed VALUES (301, 'new', '2030-01-02')")
        await pg_execute(pg_destination_url, "ALTER TABLE keyed DROP CONSTRAINT keyed_pkey")

        twice = await replicate(src, dst, "REPLICATE [nokey] (PRIMARY KEY (id))", BatchSize=1)
        assert twice.task.status == SUCCESS, twice.task.error
        assert merged(twice)
        assert await pg_fetch(pg_destination_url, "SELECT v FROM nokey WHERE id = 7") == [("second",)]
        # the first row merged in its own batch, the second replaced it in the next
        assert (twice.task.inserted, twice.task.updated) == (0, 2)

        unindexed = await replicate(src, dst, "REPLICATE [keyed]", BatchSize=20)
        assert unindexed.task.status == SUCCESS, unindexed.task.error
        assert merged(unindexed)
        assert (unindexed.task.inserted, unindexed.task.updated) == (1, 30)
        columns = ["id", "v", "updated_at"]
        assert await checksum(src, "keyed", columns) == await checksum(dst, "keyed", columns)
    finally:
        await src.close()
        await dst.close()
