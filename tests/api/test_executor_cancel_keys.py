"""CancelJob while a run is comparing keys with the source (the step that finds deleted rows).

The run is held exactly there (tests/api/pause.py: the first ``TaskStage`` whose text starts with "comparing keys";
the engine itself is not touched), so the cancel lands where a real one would: the upserts before it are committed,
the deletes after it are not. SQLite source; SQLite and PostgreSQL destinations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator

import asyncpg
import pytest

from odata_sync.replication.progress import TaskStage
from tests.api.pause import Pause
from tests.conftest import Api
from tests.databases import postgres_database

ROWS = 3000
DELETED = range(1, 101)  # deleted from the source before the incremental run
UPDATED = range(200, 250)
ADDED = range(5001, 5021)
WAIT = 10.0  # seconds any one step may take before the test fails


def _stamp(i: int, month: int = 1) -> str:
    """Distinct, increasing check values (ISO text sorts like time)."""
    return f"2024-{month:02d}-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"


def make_source(path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, updated_at TEXT)")
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                   [(i, f"customer {i % 97}", i * 1.5, _stamp(i)) for i in range(1, ROWS + 1)])
    db.commit()
    db.close()


def change_source(path) -> None:
    """Deletes, updates (a later check value) and inserts: an incremental run has all three to carry over."""
    db = sqlite3.connect(path)
    db.execute(f"DELETE FROM orders WHERE id BETWEEN {DELETED.start} AND {DELETED.stop - 1}")
    db.executemany("UPDATE orders SET amount = -1, updated_at = ? WHERE id = ?", [(_stamp(i, 2), i) for i in UPDATED])
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                   [(i, "new", 0.5, _stamp(i, 3)) for i in ADDED])
    db.commit()
    db.close()


def source_rows(path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, customer, amount, updated_at FROM orders ORDER BY id").fetchall()
    finally:
        db.close()


class Destination:
    """Reads a destination back: its rows and the replication mark kept beside them (``_odata_sync_state``)."""

    provider: str
    connection_string: str

    async def rows(self) -> list[tuple]:
        raise NotImplementedError

    async def mark(self) -> str | None:
        raise NotImplementedError


class SQLiteDestination(Destination):
    provider = "SQLite"

    def __init__(self, path) -> None:
        self.path = path
        self.connection_string = f"Database={path}"

    def _query(self, sql: str) -> list[tuple]:
        db = sqlite3.connect(self.path)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    async def rows(self) -> list[tuple]:
        return self._query("SELECT id, customer, amount, updated_at FROM orders ORDER BY id")

    async def mark(self) -> str | None:
        return self._query("SELECT mark FROM _odata_sync_state WHERE table_name = 'orders'")[0][0]


class PostgresDestination(Destination):
    provider = "PostgreSQL"

    def __init__(self, url: str) -> None:
        self.url = url
        database = url.rsplit("/", 1)[1]
        self.connection_string = f"Server=127.0.0.1;Port=5432;Database={database};User=postgres"

    async def _query(self, sql: str) -> list[tuple]:
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def rows(self) -> list[tuple]:
        return await self._query("SELECT id, customer, amount, updated_at FROM orders ORDER BY id")

    async def mark(self) -> str | None:
        return (await self._query("SELECT mark FROM _odata_sync_state WHERE table_name = 'orders'"))[0][0]


@pytest.fixture(params=["sqlite", "postgresql"], ids=["to-sqlite", "to-postgresql"])
def destination(request, tmp_path) -> Iterator[Destination]:
    if request.param == "sqlite":
        yield SQLiteDestination(tmp_path / "destination.db")
        return
    with postgres_database("odsync_dest") as url:
        yield PostgresDestination(url)


def comparing_keys(event) -> bool:
    return isinstance(event, TaskStage) and event.stage.startswith("comparing keys")


async def _ended(api: Api, run_id: str) -> dict:
    async def poll() -> dict:
        while True:
            run = (await api.ok("GET", f"History?$filter=RunId eq {run_id}"))["value"][0]
            if run["Status"] not in ("QUEUED", "RUNNING"):
                return run
            await asyncio.sleep(0.02)
    return await asyncio.wait_for(poll(), WAIT)


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "immediate"])
async def test_cancel_while_comparing_keys(api, tmp_path, monkeypatch, destination: Destination, graceful: bool):
    source = tmp_path / "source.db"
    make_source(source)
    await api.ok("POST", "Connections", 201, json={"Name": "src", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={source}"})
    await api.ok("POST", "Connections", 201, json={"Name": "dst", "ProviderName": destination.provider,
                                                   "ConnectionString": destination.connection_string})
    await api.ok("POST", "Jobs", 201, json={"JobName": "keys", "Source": "src", "Destination": "dst",
                                            "BatchSize": 500, "OtherCacheOptions": "IncrementalCheckColumns=updated_at",
                                            "Query#1": "REPLICATE [orders]"})
    first = await api.ok("POST", "ExecuteJob", json={"JobName": "keys"})
    assert first["value"][0]["Status"] == "SUCCESS" and len(await destination.rows()) == ROWS
    before = await destination.mark()

    change_source(source)
    pause = Pause(comparing_keys).install(monkeypatch)
    queued = await api.ok("POST", "ExecuteJob", json={"JobName": "keys", "Async": True})
    run_id = queued["value"][0]["RunId"]
    await asyncio.wait_for(pause.reached.wait(), WAIT)
    status = await api.ok("POST", "GetJobStatus", json={"JobName": "keys"})
    assert status["Status"] == "RUNNING" and status["Stage"].startswith("task 1: comparing keys"), status

    cancelled = await api.ok("POST", "CancelJob", json={"JobName": "keys", "Graceful": graceful})
    assert cancelled["value"][0] == {"JobName": "keys", "RunId": run_id, "Status": "CANCELLING"}
    pause.resume.set()
    run = await _ended(api, run_id)
    assert run["Status"] == "CANCELLED" and run["RecordsDeleted"] == 0, run
    assert (run["RecordsUpdated"], run["RecordsInserted"]) == (len(UPDATED), len(ADDED))  # committed before it
    status = await api.ok("POST", "GetJobStatus", json={"JobName": "keys"})
    assert status["RunId"] == run_id and status["Status"] == "IDLE" and status["Queries"][0]["Status"] == "CANCELLED"

    rows = await destination.rows()
    ids = {r[0] for r in rows}
    assert set(DELETED) <= ids, "a cancelled run deleted rows"
    assert len(rows) == ROWS + len(ADDED)  # the upserts before the cancel were committed, the deletes were not
    committed = max(r[3] for r in rows)
    mark = await destination.mark()
    assert before <= mark <= committed, (before, mark, committed)  # never ahead of the data

    final = await api.ok("POST", "ExecuteJob", json={"JobName": "keys"})
    assert final["value"][0]["Status"] == "SUCCESS"
    last = (await api.ok("GET", f"History?$filter=RunId eq {final['value'][0]['RunId']}"))["value"][0]
    assert last["RecordsDeleted"] == len(DELETED)
    expected = source_rows(source)
    assert await destination.rows() == expected and len(expected) == ROWS - len(DELETED) + len(ADDED)
