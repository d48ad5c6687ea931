"""Several nodes on one PostgreSQL store (DESIGN.md, scale-out): each node is a Runtime behind its own aiohttp test
server, as separate processes would be. The per-connection run limit holds across them, and one scheduler leads:
every due tick queues exactly one run, and when the leader stops another node takes over."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from odata_sync.app import Runtime, build_app, create_runtime
from odata_sync.config import Config
from odata_sync.store.types import utcnow
from tests.api.test_executor import count_rows, make_source, setup_job
from tests.conftest import ADMIN_PASSWORD, ADMIN_TOKEN, Api, _truncate

WAIT = 15.0  # seconds any awaited condition may take before the test fails
ROWS = 20_000  # a run of this many rows lasts long enough for runs to overlap if nothing stopped them


@dataclass
class Node:
    runtime: Runtime
    api: Api

    async def stop(self) -> None:
        """Stop the node's server, executor and scheduler (what a process exiting does)."""
        await self.api.client.close()


@pytest.fixture
def pg_config(tmp_path, _postgres_url) -> Config:
    """A configuration on the shared PostgreSQL store, emptied first. Every node shares the data dir, hence the
    key that encrypts connection strings, as nodes of one cluster share ODATA_SYNC_SECRET_KEY."""
    asyncio.run(_truncate(_postgres_url))
    return Config(data_dir=tmp_path / "data", database_url=_postgres_url, admin_token=ADMIN_TOKEN,
                  admin_password=ADMIN_PASSWORD)


async def start_node(aiohttp_client, config: Config) -> Node:
    runtime = await create_runtime(config)
    return Node(runtime, Api(await aiohttp_client(build_app(runtime))))


async def until(check: Callable, what: str, interval: float = 0.02):
    """Poll ``check`` (sync or async) until it returns something truthy; that value."""
    async def poll():
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)
    try:
        return await asyncio.wait_for(poll(), WAIT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def running_count(runtime: Runtime, job_names: list[str]) -> int:
    history = runtime.store.table("History")
    async with runtime.store.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).where(
            history.c.JobName.in_(job_names), history.c.Status.in_(("RUNNING", "CANCELLING"))))).scalar()


async def history(api: Api, names: list[str]) -> list[dict]:
    where = " or ".join(f"JobName eq '{n}'" for n in names)
    return (await api.ok("GET", f"History?$filter={where}&$orderby=Id&$top=1000"))["value"]


def assert_one_at_a_time(runs: list[dict]) -> None:
    """No run started before the one before it had ended (timestamps from the store, one clock)."""
    spans = sorted((dt.datetime.fromisoformat(r["RunStartDate"]), dt.datetime.fromisoformat(r["RunEndDate"]))
                   for r in runs)
    for (_, ended), (started, _) in zip(spans, spans[1:], strict=False):
        assert started >= ended, f"a run started at {started} while another ran until {ended}"


async def make_shared_jobs(api: Api, tmp_path, count: int) -> list[str]:
    """``count`` jobs reading one source connection (``src``) into their own destinations."""
    source = tmp_path / "source.db"
    make_source(source, ROWS)
    await api.ok("POST", "Connections", 201, json={"Name": "src", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={source}"})
    names = [f"share{i}" for i in range(count)]
    for i, name in enumerate(names):
        await api.ok("POST", "Connections", 201, json={"Name": f"dst{i}", "ProviderName": "SQLite",
                                                       "ConnectionString": f"Database={tmp_path / f'd{i}.db'}"})
        await api.ok("POST", "Jobs", 201, json={"JobName": name, "Source": "src", "Destination": f"dst{i}",
                                                "Query#1": "REPLICATE [orders]"})
    return names


async def watch(runtime: Runtime, names: list[str], api: Api) -> int:
    """Sample how many runs of ``names`` are going until all have ended; the most seen at once."""
    most = 0

    async def all_ended() -> bool:
        nonlocal most
        most = max(most, await running_count(runtime, names))
        runs = await history(api, names)
        return len(runs) == len(names) and all(r["Status"] not in ("QUEUED", "RUNNING") for r in runs)

    await until(all_ended, f"the runs of {names} to end", interval=0.005)
    return most


async def test_runs_per_connection_hold_across_nodes(pg_config, aiohttp_client, tmp_path):
    config = dataclasses.replace(pg_config, runs_per_connection=1, workers=2)
    nodes = [await start_node(aiohttp_client, config) for _ in range(2)]
    api = nodes[0].api
    names = await make_shared_jobs(api, tmp_path, 6)
    other = tmp_path / "other.db"
    make_source(other, 10)
    await api.ok("POST", "Connections", 201, json={"Name": "other_src", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={other}"})
    await api.ok("POST", "Connections", 201, json={"Name": "other_dst", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={tmp_path / 'other_dst.db'}"})
    await api.ok("POST", "Jobs", 201, json={"JobName": "apart", "Source": "other_src", "Destination": "other_dst",
                                            "Query#1": "REPLICATE [orders]"})

    for i, name in enumerate(names):  # queued through both nodes: each wakes its own workers
        await nodes[i % 2].api.ok("POST", "ExecuteJob", json={"JobName": name, "Async": True})
    await nodes[1].api.ok("POST", "ExecuteJob", json={"JobName": "apart", "Async": True})
    most = await watch(nodes[0].runtime, names, api)

    runs = await history(api, names)
    assert most == 1 and all(r["Status"] == "SUCCESS" for r in runs), (most, runs)
    assert_one_at_a_time(runs)
    assert all(count_rows(tmp_path / f"d{i}.db") == ROWS for i in range(len(names)))
    [apart] = await history(api, ["apart"])
    # a run whose connections are free is not held behind the ones waiting for src
    started = [dt.datetime.fromisoformat(r["RunStartDate"]) for r in runs]
    assert apart["Status"] == "SUCCESS" and dt.datetime.fromisoformat(apart["RunStartDate"]) < max(started)


async def test_runs_per_connection_hold_on_one_node(config, aiohttp_client, tmp_path):
    node = await start_node(aiohttp_client, dataclasses.replace(config, runs_per_connection=1, workers=3))
    names = await make_shared_jobs(node.api, tmp_path, 3)
    for name in names:
        await node.api.ok("POST", "ExecuteJob", json={"JobName": name, "Async": True})
    most = await watch(node.runtime, names, node.api)
    runs = await history(node.api, names)
    assert most == 1 and all(r["Status"] == "SUCCESS" for r in runs), (most, runs)
    assert_one_at_a_time(runs)


def leader_of(nodes: list[Node]) -> Node | None:
    """The one node whose scheduler leads; None unless exactly one does."""
    leaders = [n for n in nodes if n.runtime.executor.scheduler.leader]
    return leaders[0] if len(leaders) == 1 else None


async def settle(nodes: list[Node]) -> None:
    """Wait until every node's scheduler has done two more rounds: a duplicate run would be queued by then."""
    start = [n.runtime.executor.scheduler.rounds for n in nodes]
    await until(lambda: all(n.runtime.executor.scheduler.rounds >= s + 2 for n, s in zip(nodes, start, strict=True)),
                "two scheduler rounds on every node")


async def fire(node: Node, ticks: int) -> list[dict]:
    """Make the job's tick due (as the clock reaching NextRun would) and wait for its run; the job's runs."""
    jobs = node.runtime.store.table("Jobs")
    async with node.runtime.store.write() as conn:
        await conn.execute(sa.update(jobs).where(jobs.c.JobName == "cron")
                           .values(NextRun=utcnow() - dt.timedelta(seconds=1)))

    async def ran() -> list[dict] | None:
        runs = await history(node.api, ["cron"])
        job = await node.api.ok("GET", "Jobs('cron')")
        consumed = dt.datetime.fromisoformat(job["NextRun"]) > utcnow()
        done = len(runs) >= ticks and all(r["Status"] not in ("QUEUED", "RUNNING") for r in runs)
        return runs if consumed and done else None

    return await until(ran, f"scheduled run {ticks}")


async def test_one_scheduler_leads_and_another_takes_over(pg_config, aiohttp_client, tmp_path):
    config = dataclasses.replace(pg_config, schedule_seconds=0.05)
    nodes = [await start_node(aiohttp_client, config) for _ in range(2)]
    await setup_job(nodes[0].api, tmp_path, rows=50, name="cron")
    # a yearly cron: the next tick after each one we make due is months away, so only our ticks fire
    await nodes[0].api.ok("PATCH", "Jobs('cron')", json={"Scheduled": True, "ScheduledCron": "0 0 1 1 *"})
    leader = await until(lambda: leader_of(nodes), "one scheduler leader")

    for tick in range(1, 4):
        await fire(leader, tick)
        await settle(nodes)
        runs = await history(leader.api, ["cron"])
        assert [(r["TriggeredBy"], r["Status"]) for r in runs] == [("schedule", "SUCCESS")] * tick
        assert leader_of(nodes) is leader  # the lead does not move while its node lives

    await leader.stop()
    [follower] = [n for n in nodes if n is not leader]
    await until(lambda: follower.runtime.executor.scheduler.leader, "the other node to lead")
    await fire(follower, 4)
    await settle([follower])
    runs = await history(follower.api, ["cron"])
    assert [(r["TriggeredBy"], r["Status"]) for r in runs] == [("schedule", "SUCCESS")] * 4
