"""Crash safety: a replication process SIGKILLed at any moment leaves the destination at a committed state (no
duplicates, no half batch, no mark ahead of the data), and the next run converges to an exact copy.

Each test runs the job in a subprocess (``crash_worker``), kills it at chosen points of a full load of 200,000 rows
or of a large incremental run, checks the invariants after each kill, and lets a last run finish.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from odata_sync.replication import DEFAULT_LOOKBACK_SECONDS, STATE_TABLE
from odata_sync.replication.state import DONE, LOADING, StateTable
from tests.replication import source as orders
from tests.replication.checksum import checksum, duplicate_keys, row_hash
from tests.replication.conftest import Place, make_place, replicate

ROOT = Path(__file__).resolve().parents[2]
FULL_ROWS, FULL_BATCH = 200_000, 10_000


def _kill_when(spec: dict, tmp_path: Path, condition: Callable[[list[str]], bool] | None,
               timeout: float = 120) -> list[str]:
    """Run the worker until ``condition(progress lines)`` holds, then SIGKILL it; returns the lines seen. Without a
    condition the worker runs to its end, which must be a success."""
    progress = tmp_path / f"progress_{uuid.uuid4().hex[:6]}.txt"
    spec_file = tmp_path / f"spec_{uuid.uuid4().hex[:6]}.json"
    spec_file.write_text(json.dumps({**spec, "progress": str(progress)}))
    process = subprocess.Popen([sys.executable, "-m", "tests.replication.crash_worker", str(spec_file)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    try:
        while time.monotonic() < deadline:
            ended = process.poll() is not None
            lines = progress.read_text().splitlines() if progress.exists() else []
            if condition is None and ended:
                assert process.returncode == 0 and lines[-1].startswith("finished SUCCESS"), lines
                return lines
            if condition is not None and condition(lines):
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
                return lines
            if ended and condition is not None:
                raise AssertionError(f"the run ended before the kill point: {lines}\n{process.stdout.read()}")
            time.sleep(0.002)
        raise AssertionError(f"no kill point within {timeout} s: {lines}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _batches(at_least: int) -> Callable[[list[str]], bool]:
    return lambda lines: sum(line.startswith("batch ") for line in lines) >= at_least


def _stage(text: str) -> Callable[[list[str]], bool]:
    return lambda lines: any(line.startswith("stage ") and text in line for line in lines)


def _spec(src: Place, dst: Place, **job) -> dict:
    return {"source": [src.provider, src.connection_string], "destination": [dst.provider, dst.connection_string],
            "query": "REPLICATE [orders]", "job": job}


async def _row_hashes(place: Place, where=()) -> dict[int, int]:
    connector = place.connector()
    try:
        _cols, batches = await connector.read("orders", 20_000, columns=orders.COLUMNS, where=list(where))
        return {row[0]: row_hash(row) async for batch in batches for row in batch}
    finally:
        await connector.close()


async def _state(place: Place):
    connector = place.connector()
    try:
        return await StateTable(connector, None).load("orders")
    finally:
        await connector.close()


async def _assert_no_duplicates(place: Place) -> None:
    connector = place.connector()
    try:
        assert await duplicate_keys(connector, "orders", "id") == 0
    finally:
        await connector.close()


async def _assert_partial_load(source: dict[int, int], dst: Place) -> int:
    """After a kill during a full load: whole batches only, every row an exact source row, the load unfinished."""
    await _assert_no_duplicates(dst)
    copied = await _row_hashes(dst)
    assert len(copied) % FULL_BATCH == 0, f"{len(copied)} rows: half a batch was committed"
    assert all(source.get(key) == value for key, value in copied.items())
    state = await _state(dst)
    assert state is not None and state.phase == LOADING and state.mark is None
    return len(copied)


async def _assert_mark_not_ahead(src: Place, dst: Place, previous_mark) -> None:
    """After a kill during an incremental run: every source row below the stored mark is in the destination as is
    (checked from the mark the run started from, minus the lookback: the rows below were the full load's)."""
    await _assert_no_duplicates(dst)
    state = await _state(dst)
    assert state is not None and state.phase == DONE and state.mark >= previous_mark
    below = [("updated_at", ">=", previous_mark - dt.timedelta(seconds=DEFAULT_LOOKBACK_SECONDS)),
             ("updated_at", "<", state.mark)]
    source, copied = await _row_hashes(src, below), await _row_hashes(dst, below)
    missing = [key for key, value in source.items() if copied.get(key) != value]
    assert not missing, f"{len(missing)} source rows below the mark {state.mark} are not in the destination"


async def _finish_and_compare(src: Place, dst: Place, **job) -> None:
    source, destination = src.connector(), dst.connector()
    try:
        outcome = await replicate(source, destination, **job)
        assert outcome.task.status == "SUCCESS", outcome.task.error
        expected = await checksum(source, "orders", orders.COLUMNS)
        assert await checksum(destination, "orders", orders.COLUMNS) == expected
        assert await duplicate_keys(destination, "orders", "id") == 0
        assert {t.name for t in await destination.list_tables()} >= {"orders", STATE_TABLE}
        assert not [t.name for t in await destination.list_tables() if t.name.startswith("_odsync_")]
    finally:
        await source.close()
        await destination.close()
    state = await _state(dst)
    assert state.phase == DONE and state.mark is not None


CRASH_PAIRS = [("SQLite", "PostgreSQL"), ("PostgreSQL", "SQLite")]


def _places(request: pytest.FixtureRequest, tmp_path: Path, source: str, destination: str) -> tuple[Place, Place]:
    def place(provider: str, role: str) -> Place:
        url = request.getfixturevalue(f"pg_{role}_url") if provider == "PostgreSQL" else None
        return make_place(provider, tmp_path, url)
    return place(source, "source"), place(destination, "destination")


@pytest.mark.parametrize("source, destination", CRASH_PAIRS, ids=[f"{s}-{d}" for s, d in CRASH_PAIRS])
def test_killed_full_load(request, tmp_path, source, destination):
    src, dst = _places(request, tmp_path, source, destination)
    asyncio.run(src.make_orders(FULL_ROWS))
    source_rows = asyncio.run(_row_hashes(src))
    spec = {**_spec(src, dst, BatchSize=FULL_BATCH), "chunk_rows": FULL_BATCH}  # pass-through chunks: batches
    for kill_after in (1, 9):  # each restart loads from the beginning: kill once early, once past the middle
        _kill_when(spec, tmp_path, _batches(kill_after))
        copied = asyncio.run(_assert_partial_load(source_rows, dst))
        assert copied >= kill_after * FULL_BATCH
    asyncio.run(_finish_and_compare(src, dst, BatchSize=FULL_BATCH))


# PostgreSQL -> SQLite upserts cost O(table x batch) in the SQLite connector today: a smaller table there
INCREMENTAL_CASES = [("SQLite", "PostgreSQL", 200_000, 1_000), ("PostgreSQL", "SQLite", 30_000, 150),
                     ("PostgreSQL", "PostgreSQL", 200_000, 1_000)]  # the last: changes staged in the destination


@pytest.mark.parametrize("source, destination, rows, batch", INCREMENTAL_CASES,
                         ids=[f"{s}-{d}" for s, d, _r, _b in INCREMENTAL_CASES])
def test_killed_incremental(request, tmp_path, source, destination, rows, batch):
    src, dst = _places(request, tmp_path, source, destination)

    async def load_and_change() -> None:
        await src.make_orders(rows)
        source_connector, destination_connector = src.connector(), dst.connector()
        try:
            assert (await replicate(source_connector, destination_connector)).task.status == "SUCCESS"
        finally:
            await source_connector.close()
            await destination_connector.close()
        await src.change_orders(rows, every=20)  # 5% updated, 0.5% inserted, 0.1% deleted

    asyncio.run(load_and_change())
    mark = asyncio.run(_state(dst)).mark
    spec = _spec(src, dst, BatchSize=batch)
    lines = _kill_when(spec, tmp_path, _batches(3))
    assert "started incremental" in lines
    asyncio.run(_assert_mark_not_ahead(src, dst, mark))
    moved = asyncio.run(_state(dst)).mark
    assert moved > mark  # ordered by the check column, committed batches advanced the mark

    _kill_when(spec, tmp_path, _stage("comparing keys"))  # the changes are in; killed while collecting keys
    asyncio.run(_assert_mark_not_ahead(src, dst, moved))
    asyncio.run(_finish_and_compare(src, dst, BatchSize=batch))


def test_killed_refresh_leaves_the_previous_copy(request, tmp_path):
    """Without a key the table is refreshed in a staging table: a kill never shows a half-refreshed table."""
    src, dst = _places(request, tmp_path, "SQLite", "PostgreSQL")
    rows = 60_000
    orders.make_sqlite(Path(src.location), rows)

    def events_table() -> None:
        con = sqlite3.connect(src.location)
        con.execute("DROP TABLE IF EXISTS events")
        con.execute("CREATE TABLE events (id BIGINT, status VARCHAR(16), updated_at TIMESTAMP)")  # no key
        con.execute("INSERT INTO events SELECT id, status, updated_at FROM orders")
        con.commit()
        con.close()

    async def copy_of(place: Place) -> tuple[int, int]:
        connector = place.connector()
        try:
            return await checksum(connector, "events", ["id", "status", "updated_at"])
        finally:
            await connector.close()

    events_table()
    spec = {**_spec(src, dst, BatchSize=5_000), "query": "REPLICATE [events]"}
    _kill_when(spec, tmp_path, None)
    first = asyncio.run(copy_of(dst))
    assert first == asyncio.run(copy_of(src))
    orders.change_sqlite(Path(src.location), rows)
    events_table()
    _kill_when(spec, tmp_path, _batches(4))
    assert asyncio.run(copy_of(dst)) == first  # the live table is still the whole previous copy
    _kill_when(spec, tmp_path, _stage("swapping"))
    assert asyncio.run(copy_of(dst)) in (first, asyncio.run(copy_of(src)))  # one or the other, never a mix
    _kill_when(spec, tmp_path, None)
    assert asyncio.run(copy_of(dst)) == asyncio.run(copy_of(src))
