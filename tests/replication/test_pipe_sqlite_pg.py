"""SQLite → PostgreSQL pass-through (connectors.sqlite_pg_pipe): COPY text rendered by SQLite stores every value
exactly as the normal path (the pipe disabled) stores it, fails where the normal path fails, and converges in chunks."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sqlite3
import struct
import threading
import uuid

import asyncpg
import pytest

from odata_sync.connectors import open_connector, passthrough, sqlite_pg_pipe
from odata_sync.replication import (
    CANCELLED,
    FAILED,
    SUCCESS,
    BatchCommitted,
)
from odata_sync.replication.state import StateTable
from tests.connectors.conftest import server_connection_string
from tests.replication import source as orders
from tests.replication.checksum import checksum
from tests.replication.conftest import PIPE_CHUNK as CHUNK
from tests.replication.conftest import change_and_converge, load_again_converges, make_place, piped, replicate

N = 12_000

_U = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
#: column -> declared SQLite type and awkward values (each loads on both paths); rows take them in turn
COLUMNS = {
    "i": ("BIGINT", [0, -1, 2**63 - 1, -2**63, "42", " 7 ", 3.0, True]),
    "s": ("SMALLINT", [0, 32767, -32768, 12]),
    "amount": ("NUMERIC(12,2)", [0.1 + 0.2, 1.005, 2.675, -0.0, 1e-7, 123456.789, 5.0, 7, -1234.56, "12.50",
                                 9999999999.99, 0.125, -0.125]),
    "dec": ("DECIMAL", [0.1 + 0.2, 1e16, 1.5e-10, 123456789012345.6, 2**63 - 1, -5, 5.0, "  3.250 ", 1e-4, 1e300]),
    "dtext": ("DECIMAL_TEXT(18,4)", ["1.5", "1234.5000", "-0.0001", "  3  ", "1e3", "1_000", "NaN", "0", "-0.00",
                                     "99999999999999.9999", "12.34565"]),
    "f": ("DOUBLE", [0.1 + 0.2, 1e-310, 5e-324, 1.7976931348623157e308, -0.0, "nan", "inf", "-Infinity", " 1.5 ",
                     7, 1 / 3, 123456.789, 1e15, 1e16, 0.0001, 1e-5]),
    "b": ("BOOLEAN", [0, 1, 2, -1, 0.5, "true", "no", " YES ", "f"]),
    "ts": ("TIMESTAMP", ["2024-01-01 00:00:07", "2024-01-01 00:00:07.123456", "2024-01-01T10:00:00",
                         "2024-02-29 23:59:59.5", "2024-01-01 10:00:00Z", "2024-01-01 10:00:00+02:00", "2024-03-01",
                         "2024-01-01 20:00:00", "2024-01-01 23:59:59.999999", " 2024-05-05 05:05:05 "]),
    "tz": ("TIMESTAMPTZ", ["2024-01-01 00:00:07", "2024-01-01 10:00:00.000001+00:00", "2024-01-01 10:00:00+05:30",
                           "2024-06-01T12:00:00Z", "2024-01-01 21:30:00.250000"]),
    "d": ("DATE", ["2024-02-29", "2024-01-01 10:00:00", "2024-01-01T23:00", "0001-01-01", "9999-12-31"]),
    "tm": ("TIME", ["10:00:00", "23:59:59.123456", "10:00", "10:00:00.5", "10:00:00+01:00", "21:00:00"]),
    "u": ("UUID", [str(_U), str(_U).upper(), "{" + str(_U) + "}", _U.hex, _U.bytes]),
    "j": ("JSON", ['{"a": 1}', " [1, 2] ", '"x"', '{\n "a": "tab\\there",\r\n\t"b": "back\\\\slash"}', "null"]),
    "t": ("TEXT", ["", "plain", "tab\there", "line\nbreak", "cr\rx", "back\\slash", "\\N", "\\.", "ünï 🎉 日本",
                   b"bytes", b"\xff\xfe", 12, "a\x1fb\x1ec"]),
    "raw": ("", [12, 1.5, 0.1 + 0.2, b"\x01\x02", "text", -0.0, 2**62]),
    "v": ("VARCHAR(10)", ["0123456789", "", "x", "ü" * 10]),
}
BINARY = ("BLOB", [b"", b"\x00\x01\\\t\n", "\\x0a0b", "abc", bytes(range(256))])


def make_awkward(path, rows: int, columns: dict) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {', '.join(f'{n} {d}' for n, (d, _v) in columns.items())})")
        conn.executemany(f"INSERT INTO t VALUES (?{', ?' * len(columns)})",
                         [(i, *[None if (i + k) % 11 == 0 else vs[i % len(vs)]
                                for k, (_d, vs) in enumerate(columns.values())]) for i in range(1, rows + 1)])


async def stored(url: str, table: str = "t") -> list[tuple]:
    """Every row, each value as PostgreSQL's text and its type: exact (numeric scale, float digits, time zone)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 3")
        names = [r["attname"] for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum", table)]
        select = ", ".join(f'"{n}"::text, pg_typeof("{n}")::text' for n in names)
        return [tuple(r) for r in await conn.fetch(f'SELECT {select} FROM "{table}" ORDER BY 1')]
    finally:
        await conn.close()


async def load_both(path, urls: tuple[str, str], monkeypatch, query: str = "REPLICATE [t]", **job) -> list:
    """The same load through the pipe (first URL) and through the normal path (second URL)."""
    outcomes = []
    for use_pipe, url in zip((True, False), urls, strict=True):
        if not use_pipe:
            monkeypatch.setattr(passthrough, "_PAIRS", {})
        src = open_connector("SQLite", f"Database={path}")
        dst = open_connector("PostgreSQL", server_connection_string(url))
        try:
            outcomes.append(await replicate(src, dst, query, **job))
        finally:
            await src.close()
            await dst.close()
    monkeypatch.undo()
    return outcomes


@pytest.mark.parametrize("with_binary", [False, True], ids=["fast", "escaped"])
async def test_pipe_stores_what_the_normal_path_stores(pg_source_url, pg_destination_url, tmp_path, monkeypatch,
                                                       with_binary):
    """Value by value and type by type, on dynamically typed awkward values (without a binary column the text is
    rendered unescaped and checked; with one every block is escaped in SQL)."""
    columns = dict(COLUMNS, bl=BINARY) if with_binary else COLUMNS
    path = tmp_path / "src.db"
    make_awkward(path, 600, columns)
    rng = random.Random(5)
    with sqlite3.connect(path) as conn:  # doubles of every bit pattern, and decimals with up to 8 places
        conn.executemany("UPDATE t SET f = ?, dec = ?, amount = ? WHERE id = ?",
                         [(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0],
                           struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0],
                           round(rng.uniform(-1e7, 1e7), rng.randrange(0, 8)), i) for i in range(1, 600, 3)])
        conn.execute("UPDATE t SET f = NULL WHERE f != f OR abs(f) > 1e308")
        conn.execute("UPDATE t SET dec = NULL WHERE dec != dec OR abs(dec) > 1e308")
    monkeypatch.setattr(sqlite_pg_pipe, "BLOCK_ROWS", 100)
    piped_load, normal = await load_both(path, (pg_destination_url, pg_source_url), monkeypatch)
    assert normal.task.status == SUCCESS, normal.task.error
    assert piped_load.task.status == SUCCESS, piped_load.task.error
    assert piped(piped_load) and not piped(normal)
    assert ("escaped in SQL" in piped(piped_load)[0]) is with_binary
    assert piped_load.task.rows_read == normal.task.rows_read == 600
    ours, theirs = await stored(pg_destination_url), await stored(pg_source_url)
    assert len(ours) == 600
    for mine, expected in zip(ours, theirs, strict=True):
        assert mine == expected


@pytest.mark.parametrize("declared, value", [
    ("INTEGER", 1.5), ("BIGINT", 1e20), ("INTEGER", "abc"), ("SMALLINT", 40000), ("NUMERIC(12,2)", "abc"),
    ("NUMERIC(5,2)", 12345.67), ("TIMESTAMP", "2024-01-01 24:00:00"), ("TIMESTAMP", "2024-02-30 10:00:00"),
    ("TIMESTAMP", "0000-01-01 10:00:00"), ("TIMESTAMP", "2024-01-01 10:00:0Z"), ("TIMESTAMP", 20240101),
    ("DATE", "2024-13-01"), ("BOOLEAN", "maybe"), ("UUID", "nope"), ("JSON", "{bad"), ("VARCHAR(3)", "toolong"),
    ("TEXT", "a\x00b"), ("DOUBLE", "x1"), ("DATE", "2024-01-01\x00junk"),
])
async def test_a_value_the_normal_path_rejects_fails_the_load(pg_source_url, pg_destination_url, tmp_path,
                                                               monkeypatch, declared, value):
    path = tmp_path / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, x {declared})")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, None), (2, value)])
    piped_load, normal = await load_both(path, (pg_destination_url, pg_source_url), monkeypatch)
    assert normal.task.status == FAILED
    assert piped_load.task.status == FAILED, piped(piped_load)
    assert piped(piped_load)
    # the normal path's message, or PostgreSQL's when it is PostgreSQL that finds the value invalid
    assert piped_load.task.error == normal.task.error or piped_load.task.error.startswith("PostgreSQL: "), \
        (piped_load.task.error, normal.task.error)


async def test_chunked_load_then_incremental_converges(pg_destination_url, tmp_path, monkeypatch, small_chunks):
    monkeypatch.setattr(sqlite_pg_pipe, "BLOCK_ROWS", 300)
    src_place, dst_place = make_place("SQLite", tmp_path), make_place("PostgreSQL", tmp_path, pg_destination_url)
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        full = await replicate(src, dst, BatchSize=CHUNK)
        assert full.task.status == SUCCESS, full.task.error
        assert piped(full) == [f"copying without conversion: COPY text rendered by SQLite, {N // CHUNK} chunk(s) "
                               "on 2 connection pair(s)"]
        commits = full.of(BatchCommitted)
        assert len(commits) == N // CHUNK and sum(c.rows for c in commits) == N
        assert await checksum(src, "orders", orders.COLUMNS) == await checksum(dst, "orders", orders.COLUMNS)
        assert [c.name for c in await dst.list_columns("orders") if c.primary_key] == ["id"]

        await change_and_converge(src_place, src, dst, N, BatchSize=CHUNK)
    finally:
        await src.close()
        await dst.close()


async def test_failure_in_a_late_chunk_keeps_whole_chunks_and_the_next_run_converges(pg_destination_url, tmp_path,
                                                                                    small_chunks):
    src_place, dst_place = make_place("SQLite", tmp_path), make_place("PostgreSQL", tmp_path, pg_destination_url)
    await src_place.make_orders(N)
    with sqlite3.connect(src_place.location) as conn:
        conn.execute("UPDATE orders SET created_at = 'not a time' WHERE id = ?", (N - 10,))
    src, dst = src_place.connector(), dst_place.connector()
    try:
        failed = await replicate(src, dst, BatchSize=CHUNK)
        assert failed.task.status == FAILED and "not a time" in failed.task.error, failed.task.error
        assert piped(failed)
        committed = sum(c.rows for c in failed.of(BatchCommitted))
        # whole chunks: every one but the last, less the other pair's chunk when it was still in flight
        assert committed in (N - CHUNK, N - 2 * CHUNK) and len(failed.of(BatchCommitted)) == committed // CHUNK
        assert (await checksum(dst, "orders", ["id"]))[0] == committed
        assert not src.conn.in_transaction  # the source's snapshot was released

        with sqlite3.connect(src_place.location) as conn:
            conn.execute("UPDATE orders SET created_at = '2024-01-01 00:00:00' WHERE id = ?", (N - 10,))
        await load_again_converges(src, dst, BatchSize=CHUNK)
    finally:
        await src.close()
        await dst.close()


async def test_cancelled_load_keeps_whole_chunks_releases_the_source_and_is_redone(pg_destination_url, tmp_path,
                                                                                     small_chunks):
    src_place, dst_place = make_place("SQLite", tmp_path), make_place("PostgreSQL", tmp_path, pg_destination_url)
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        stopped = await replicate(src, dst, cancel_after=1, BatchSize=CHUNK)
        assert stopped.finished.status == CANCELLED
        copied = (await checksum(dst, "orders", ["id"]))[0]
        assert copied % CHUNK == 0 and 0 < copied < N
        assert not src.conn.in_transaction  # the source's snapshot was released
        with sqlite3.connect(src_place.location) as conn:  # and the source is writable at once
            conn.execute("UPDATE orders SET note = 'after the cancel' WHERE id = 1")

        await load_again_converges(src, dst, BatchSize=CHUNK)
        assert [c.name for c in await dst.list_columns("orders") if c.primary_key] == ["id"]
    finally:
        await src.close()
        await dst.close()


async def test_without_rowid_and_unsupported_types(pg_destination_url, tmp_path):
    """A WITHOUT ROWID table goes as one chunk; a destination ``real`` column makes the load go the normal way."""
    path = tmp_path / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER, note TEXT) WITHOUT ROWID")
        conn.executemany("INSERT INTO kv VALUES (?, ?, ?)", [(f"k{i:05d}", i, f"a\tb{i}") for i in range(3_000)])
        conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, x FLOAT4)")
        conn.executemany("INSERT INTO r VALUES (?, ?)", [(i, i / 7) for i in range(100)])
    src = open_connector("SQLite", f"Database={path}")
    dst = open_connector("PostgreSQL", server_connection_string(pg_destination_url))
    try:
        full = await replicate(src, dst, "REPLICATE [kv]")
        assert full.task.status == SUCCESS, full.task.error
        assert piped(full) and "1 chunk(s)" in piped(full)[0]
        assert await checksum(src, "kv", ["k", "v", "note"]) == await checksum(dst, "kv", ["k", "v", "note"])
        real = await replicate(src, dst, "REPLICATE [r]")
        assert real.task.status == SUCCESS, real.task.error
        assert not piped(real)
    finally:
        await src.close()
        await dst.close()


async def _source_checksum(src_place) -> tuple:
    src = src_place.connector()
    try:
        return await checksum(src, "orders", orders.COLUMNS)
    finally:
        await src.close()


async def _loads_as_it_was(src_place, dst_place, before: tuple, pairs: int, **job) -> None:
    """A piped load on ``pairs`` connection pairs stores the source as it was (``before``) and saves as its mark the
    source's highest ``updated_at``, as the normal path reads it."""
    src, dst = src_place.connector(), dst_place.connector()
    try:
        full = await replicate(src, dst, BatchSize=CHUNK, **job)
        assert full.task.status == SUCCESS, full.task.error
        assert f"on {pairs} connection pair(s)" in piped(full)[0]
        assert await checksum(dst, "orders", orders.COLUMNS) == before
        with sqlite3.connect(src_place.location) as conn:
            highest = conn.execute("SELECT max(updated_at) FROM orders").fetchone()[0]
        state = await StateTable(dst, None).load("orders")
        assert state is not None and state.mark == dt.datetime.fromisoformat(highest)
    finally:
        await src.close()
        await dst.close()


async def test_two_readers_share_one_snapshot_and_hold_writers_off(pg_destination_url, tmp_path, monkeypatch,
                                                                    small_chunks):
    """The second connection reads the same snapshot: while the load runs, no writer can commit."""
    monkeypatch.setattr(sqlite_pg_pipe, "BLOCK_ROWS", 300)
    src_place, dst_place = make_place("SQLite", tmp_path), make_place("PostgreSQL", tmp_path, pg_destination_url)
    await src_place.make_orders(N)
    before = await _source_checksum(src_place)
    refused = []
    another = sqlite_pg_pipe._TextCopyPipe._another_reader

    async def then_write(pipe):
        reader = await another(pipe)
        conn = sqlite3.connect(src_place.location, timeout=0.2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE orders SET note = 'during the load' WHERE id = 1")
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            refused.append(str(exc))
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return reader

    monkeypatch.setattr(sqlite_pg_pipe._TextCopyPipe, "_another_reader", then_write)
    await _loads_as_it_was(src_place, dst_place, before, 2)
    assert refused == ["database is locked"]


async def test_a_waiting_writer_or_wal_leaves_one_reader(pg_destination_url, tmp_path, monkeypatch, small_chunks):
    """A writer already waiting to commit would deadlock with a second reader's lock, and a WAL reader's snapshot
    is its own: both load on one connection pair, from one snapshot."""
    src_place, dst_place = make_place("SQLite", tmp_path), make_place("PostgreSQL", tmp_path, pg_destination_url)
    await src_place.make_orders(N)
    before = await _source_checksum(src_place)
    committed = threading.Event()
    another = sqlite_pg_pipe._TextCopyPipe._another_reader

    def write() -> None:
        with sqlite3.connect(src_place.location, timeout=60) as conn:
            conn.execute("UPDATE orders SET note = 'waited' WHERE id = 1")
            conn.commit()  # waits for the load's shared lock, holding the lock that keeps new readers out
        committed.set()

    def keeps_readers_out() -> bool:
        probe = sqlite3.connect(src_place.location, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN")
            probe.execute("SELECT 1 FROM orders LIMIT 1").fetchall()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()

    async def writer_first(pipe):
        threading.Thread(target=write, daemon=True).start()
        for _ in range(200):  # until the writer waits to commit (no new reader can begin then)
            if await asyncio.to_thread(keeps_readers_out):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the writer never began to wait")
        return await another(pipe)

    monkeypatch.setattr(sqlite_pg_pipe._TextCopyPipe, "_another_reader", writer_first)
    await _loads_as_it_was(src_place, dst_place, before, 1)
    assert await asyncio.to_thread(committed.wait, 30)

    with sqlite3.connect(src_place.location) as conn:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    await _loads_as_it_was(src_place, dst_place, await _source_checksum(src_place), 1, DropTable=True)
