"""Fixtures: fresh sources and destinations of each provider (server databases per test, files in tmp_path), and a
helper that runs a job and collects its events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from odata_sync.connectors import Connector, open_connector, passthrough
from odata_sync.replication import (
    SUCCESS,
    BatchCommitted,
    JobSettings,
    RunFinished,
    TaskFinished,
    TaskSettings,
    TaskStage,
    TaskStarted,
    run_job,
)
from tests.connectors.conftest import server_connection_string
from tests.databases import mysql_database, postgres_database
from tests.replication import source as orders
from tests.replication.checksum import checksum


@pytest.fixture
def pg_source_url() -> Iterator[str]:
    with postgres_database("odsync_rsrc") as url:
        yield url


@pytest.fixture
def pg_destination_url() -> Iterator[str]:
    with postgres_database("odsync_rdst") as url:
        yield url


@pytest.fixture
def mysql_source_url() -> Iterator[str]:
    with mysql_database("odsync_rsrc") as url:
        yield url


@pytest.fixture
def mysql_destination_url() -> Iterator[str]:
    with mysql_database("odsync_rdst") as url:
        yield url


@dataclass
class Place:
    """One source or destination: its provider, connection string, and where the raw helpers find it."""

    provider: str
    connection_string: str
    location: str | Path

    def connector(self) -> Connector:
        return open_connector(self.provider, self.connection_string)

    async def make_orders(self, n: int) -> None:
        match self.provider:
            case "PostgreSQL":
                await orders.make_postgres(str(self.location), n)
            case "MySQL":
                await orders.make_mysql(str(self.location), n)
            case "SQLite":
                orders.make_sqlite(Path(self.location), n)
            case "CSV":
                orders.make_csv(Path(self.location), n)
            case _:
                raise AssertionError(self.provider)

    async def change_orders(self, n: int, **kwargs) -> None:
        match self.provider:
            case "PostgreSQL":
                await orders.change_postgres(str(self.location), n, **kwargs)
            case "MySQL":
                await orders.change_mysql(str(self.location), n, **kwargs)
            case "SQLite":
                orders.change_sqlite(Path(self.location), n, **kwargs)
            case "CSV":
                orders.change_csv(Path(self.location), n, **kwargs)
            case _:
                raise AssertionError(self.provider)


def make_place(provider: str, tmp_path: Path, url: str | None = None) -> Place:
    if provider in ("PostgreSQL", "MySQL"):
        assert url is not None
        return Place(provider, server_connection_string(url), url)
    stem = tmp_path / f"{provider.lower()}_{uuid.uuid4().hex[:6]}"
    if provider == "SQLite":
        return Place(provider, f"Database={stem}.db", Path(f"{stem}.db"))
    if provider == "DuckDB":
        return Place(provider, f"Database={stem}.duckdb", Path(f"{stem}.duckdb"))
    if provider == "CSV":
        return Place(provider, f"URI={stem}", stem)
    raise AssertionError(provider)


@pytest.fixture
def places(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Place, Place]:
    """(source, destination) for tests parametrized with ``source`` and ``destination`` provider names; server
    databases are created here, outside the test's event loop."""
    params = request.node.callspec.params
    made = []
    for role in ("source", "destination"):
        provider = params[role]
        url = None
        if provider == "PostgreSQL":
            url = request.getfixturevalue(f"pg_{role}_url")
        elif provider == "MySQL":
            url = request.getfixturevalue(f"mysql_{role}_url")
        made.append(make_place(provider, tmp_path, url))
    return made[0], made[1]


@dataclass
class Outcome:
    events: list
    finished: RunFinished

    @property
    def task(self) -> TaskFinished:
        assert len(self.finished.tasks) == 1
        return self.finished.tasks[0]

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def replicate(source: Connector, destination: Connector, queries: Sequence[str] | str = "REPLICATE [orders]",
                    *, force_full: bool = False, cancel_after: int | None = None, **job) -> Outcome:
    """Run one job of ``queries`` and return its events; the job's settings come from ``job`` (API names).
    ``cancel_after``: ask the run to stop (CancelJob, graceful) once that many batches have committed."""
    if isinstance(queries, str):
        queries = [queries]
    settings = JobSettings.from_row({"JobName": "test", "Source": "src", "Destination": "dst", **job})
    tasks = [TaskSettings(query=q, task_id=i, index=i) for i, q in enumerate(queries, 1)]
    cancel, events = asyncio.Event(), []
    async for event in run_job(settings, tasks, source, destination, force_full=force_full, cancel=cancel):
        events.append(event)
        if cancel_after is not None and sum(isinstance(e, BatchCommitted) for e in events) >= cancel_after:
            cancel.set()
    assert isinstance(events[-1], RunFinished)
    return Outcome(events, events[-1])


PIPE_CHUNK = 1_000


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass-through chunks of about ``PIPE_CHUNK`` rows, so a small table is cut in many."""
    monkeypatch.setattr(passthrough, "MIN_CHUNK_ROWS", PIPE_CHUNK)


def piped(outcome: Outcome) -> list[str]:
    """The stages saying a load went through a pass-through pipe."""
    return [e.stage for e in outcome.of(TaskStage) if e.stage.startswith("copying without conversion")]


async def load_again_converges(source: Connector, destination: Connector, **job) -> Outcome:
    """After a full load that did not finish: the next run loads everything again and leaves an exact copy."""
    again = await replicate(source, destination, **job)
    assert again.task.status == SUCCESS, again.task.error
    assert again.of(TaskStarted)[0].reason.startswith("the previous full load did not finish")
    assert await checksum(source, "orders", orders.COLUMNS) == await checksum(destination, "orders", orders.COLUMNS)
    return again


async def change_and_converge(place: Place, source: Connector, destination: Connector, rows: int,
                              **job) -> Outcome:
    """After a full load of ``rows`` orders: the 1% change in the source, then an incremental run that reads only
    the changed rows and leaves an exact copy."""
    await place.change_orders(rows)
    incremental = await replicate(source, destination, **job)
    assert incremental.task.status == SUCCESS, incremental.task.error
    assert incremental.of(TaskStarted)[0].mode == "incremental"
    assert incremental.task.rows_read < rows // 10
    assert await checksum(source, "orders", orders.COLUMNS) == await checksum(destination, "orders", orders.COLUMNS)
    return incremental
