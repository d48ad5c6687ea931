"""Runs through the API: ExecuteJob (waiting and not), History and TaskHistory, GetJobStatus, GetJobLog, CancelJob,
and recovery of runs left RUNNING by a server that died. Real SQLite source and destination files."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import uuid

import sqlalchemy as sa

from odata_sync.app import build_app, create_runtime
from odata_sync.store.types import utcnow


def make_source(path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, updated_at TEXT)")
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                   [(i, f"customer {i % 97}", i * 1.5, f"2024-01-01T00:00:{i % 60:02d}") for i in range(1, rows + 1)])
    db.commit()
    db.close()


async def setup_job(api, tmp_path, rows: int = 2000, name: str = "nightly", batch_size: int | None = None) -> None:
    source, destination = tmp_path / "source.db", tmp_path / "destination.db"
    make_source(source, rows)
    await api.ok("POST", "Connections", 201, json={"Name": "src", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={source}"})
    await api.ok("POST", "Connections", 201, json={"Name": "dst", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={destination}"})
    await api.ok("POST", "Jobs", 201, json={"JobName": name, "Source": "src", "Destination": "dst",
                                            "Query#1": "REPLICATE [orders]", "BatchSize": batch_size})


def count_rows(path, table: str = "orders") -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


async def test_execute_job_waits_and_records_history(api, tmp_path):
    await setup_job(api, tmp_path)
    body = await api.ok("POST", "executeJob", json={"JobName": "nightly", "WaitForResults": "true"})
    assert body["@odata.context"].endswith("$metadata#Collection(CData.ExecuteJobOutput)")
    [row] = body["value"]
    assert row["Status"] == "SUCCESS" and row["Result"] is None and row["RecordsAffected"] == 2000
    assert row["Query"] == "REPLICATE [orders]" and row["RunId"]
    assert count_rows(tmp_path / "destination.db") == 2000

    history = await api.ok("GET", "History?$filter=JobName eq 'nightly'&$expand=Tasks")
    [run] = history["value"]
    assert run["Status"] == "SUCCESS" and run["RecordsAffected"] == 2000 and run["SyncType"] == "full"
    assert run["TriggeredBy"] == "api" and run["User"] == "admin" and run["Runtime"] >= 0
    assert run["Tasks"][0]["Status"] == "SUCCESS" and run["Tasks"][0]["RecordsInserted"] == 2000
    job = await api.ok("GET", "Jobs('nightly')")
    assert job["Status"] == "IDLE" and job["LastRunStatus"] == "SUCCESS" and job["LastRun"]
    task = (await api.ok("GET", "Tasks('nightly')"))["value"][0]
    assert task["LastRunStatus"] == "SUCCESS" and task["LastRunRecords"] == 2000

    status = await api.ok("POST", "GetJobStatus", json={"JobName": "nightly"})
    assert status["Status"] == "IDLE" and status["Progress"] == 100 and status["RunId"] == row["RunId"]
    assert status["Queries"][0]["Status"] == "SUCCESS"
    everything = await api.ok("POST", "GetJobStatus", json={})
    assert everything["JobName"] is None and [j["JobName"] for j in everything["Jobs"]] == ["nightly"]

    logs = await api.ok("POST", "getlogs", json={"JobName": "nightly"})
    text = logs["value"][0]["Log"]
    assert text.startswith("Job: nightly\nRunId: " + row["RunId"]) and "Status: SUCCESS" in text
    assert "task 1 [orders] SUCCESS" in text

    again = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})  # nothing changed: incremental no-op
    assert again["value"][0]["Status"] == "SUCCESS"
    assert count_rows(tmp_path / "destination.db") == 2000


async def test_async_run_conflict_and_cancel(api, tmp_path):
    await setup_job(api, tmp_path, rows=200_000, batch_size=2000)
    body = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly", "WaitForResults": False})
    assert body["value"][0]["Status"] in ("QUEUED", "RUNNING")
    conflict = await api.error("POST", "ExecuteJob", 409, json={"JobName": "nightly", "Async": "true"})
    assert "already" in conflict["message"]
    for _ in range(100):
        status = await api.ok("POST", "GetJobStatus", json={"JobName": "nightly"})
        if status["Status"] == "RUNNING" and status["Progress"] > 0:
            break
        await asyncio.sleep(0.05)
    cancelled = await api.ok("POST", "CancelJob", json={"JobName": "nightly", "Graceful": False})
    assert cancelled["value"][0]["Status"] in ("CANCELLING", "CANCELLED")
    for _ in range(200):
        run = (await api.ok("GET", "History?$filter=JobName eq 'nightly'"))["value"][0]
        if run["Status"] not in ("QUEUED", "RUNNING"):
            break
        await asyncio.sleep(0.05)
    assert run["Status"] == "CANCELLED"
    assert (await api.ok("GET", "Jobs('nightly')"))["Status"] == "IDLE"
    await api.error("POST", "CancelJob", 409, json={"JobName": "nightly"})
    rows = count_rows(tmp_path / "destination.db")
    assert rows % 2000 == 0 and rows < 200_000  # whole batches only: the one in flight rolled back


async def test_wait_with_timeout_answers_running_and_the_run_goes_on(api, tmp_path, monkeypatch):
    from odata_sync.replication.progress import BatchCommitted
    from tests.api.pause import Pause

    # the run is held after its first batch until the answer came: it outlasts Timeout however fast copying is
    pause = Pause(lambda event: isinstance(event, BatchCommitted)).install(monkeypatch)
    await setup_job(api, tmp_path, rows=20_000, batch_size=5000)
    body = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly", "Timeout": 1})
    assert pause.reached.is_set() and body["value"][0]["Status"] == "RUNNING"
    pause.resume.set()
    for _ in range(600):
        if (await api.ok("GET", "Jobs('nightly')"))["Status"] == "IDLE":
            break
        await asyncio.sleep(0.1)
    assert count_rows(tmp_path / "destination.db") == 20_000
    assert (await api.ok("GET", "History"))["value"][0]["Status"] == "SUCCESS"


async def test_a_waiting_execute_job_answers_once_the_result_is_committed(api, tmp_path, monkeypatch):
    """The answer does not wait for the run's connections to close (held shut here until it came): the result,
    History included, is final once committed."""
    from odata_sync.connectors.base import Connector
    from odata_sync.executor import actions

    monkeypatch.setattr(actions, "WAIT_POLL", 3600)  # (no second look at History: only the run's release answers)
    closing = asyncio.Event()
    close = Connector.close

    async def held_close(self):
        await closing.wait()
        await close(self)
    monkeypatch.setattr(Connector, "close", held_close)
    await setup_job(api, tmp_path)
    try:
        body = await asyncio.wait_for(api.ok("POST", "ExecuteJob", json={"JobName": "nightly"}), 60)
        assert body["value"][0]["Status"] == "SUCCESS" and body["value"][0]["RecordsAffected"] == 2000
        assert (await api.ok("GET", "History"))["value"][0]["Status"] == "SUCCESS"
        assert count_rows(tmp_path / "destination.db") == 2000
    finally:
        closing.set()
    for _ in range(100):  # the connections close, and the job can run again
        if (await api.ok("GET", "Jobs('nightly')"))["Status"] == "IDLE":
            break
        await asyncio.sleep(0.05)
    again = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})
    assert again["value"][0]["Status"] == "SUCCESS"


async def test_unknown_jobs_and_refusals(api, tmp_path):
    await api.error("POST", "ExecuteJob", 404, json={"JobName": "nope"})
    await api.error("POST", "ExecuteJob", 400, json={})
    await setup_job(api, tmp_path)
    await api.error("POST", "ExecuteQuery", 400, json={"JobName": "nightly", "Query#1": "REPLICATE [other]"})
    ok = await api.ok("POST", "ExecuteQuery", json={"JobName": "nightly", "Query#1": "replicate  [orders]"})
    assert ok["value"][0]["Status"] == "SUCCESS"
    history = await api.ok("GET", "History/$count")
    assert history == "1"  # the refused calls left no History row


async def test_a_server_that_starts_fails_runs_left_running(config, aiohttp_client):
    runtime = await create_runtime(config)
    history, jobs = runtime.store.table("History"), runtime.store.table("Jobs")
    now = utcnow()
    async with runtime.store.write() as conn:
        await conn.execute(jobs.insert().values(JobName="orphan", JobId=str(uuid.uuid4()), Source="s",
                                                Destination="d", Status="RUNNING", Created=now, Modified=now,
                                                Type="Standard", Scheduled=False, Verbosity=2, UseGmtDateTime=False,
                                                TruncateTableData=False, DropTable=False, AlterSchema=True,
                                                AutoTruncateStrings=False, ContinueOnError=True, SkipDeleted=False,
                                                AutomaticJobRetry=False, SendEmailNotification=False,
                                                EmailErrorOnly=False))
        await conn.execute(history.insert().values(RunId=str(uuid.uuid4()), JobName="orphan", Status="RUNNING",
                                                   RunStartDate=now - dt.timedelta(minutes=5),
                                                   _Lease=now - dt.timedelta(minutes=1)))
    client = await aiohttp_client(build_app(runtime))  # starting the app starts the executor
    assert client is not None
    async with runtime.store.engine.connect() as conn:
        run = (await conn.execute(sa.select(history.c.Status, history.c.Details))).one()
        job = (await conn.execute(sa.select(jobs.c.Status, jobs.c.LastRunStatus))).one()
    assert run.Status == "FAILED" and "interrupted" in run.Details
    assert job.Status == "IDLE" and job.LastRunStatus == "FAILED"


async def test_a_server_that_stops_during_a_run_ends_it_failed_and_says_why(config, aiohttp_client, tmp_path,
                                                                            monkeypatch):
    """Stopping cancels the run and waits for its worker to write how it ended, the rows committed so far
    included."""
    from odata_sync.replication.progress import BatchCommitted
    from tests.api.pause import Pause
    from tests.conftest import Api

    pause = Pause(lambda event: isinstance(event, BatchCommitted)).install(monkeypatch)
    runtime = await create_runtime(config)
    api = Api(await aiohttp_client(build_app(runtime)))
    await setup_job(api, tmp_path, rows=20_000, batch_size=5000)
    await api.ok("POST", "ExecuteJob", json={"JobName": "nightly", "WaitForResults": False})
    await asyncio.wait_for(pause.reached.wait(), 60)
    await runtime.executor.stop()
    history, task_history = runtime.store.table("History"), runtime.store.table("TaskHistory")
    async with runtime.store.engine.connect() as conn:
        run = (await conn.execute(sa.select(history.c.Status, history.c.Details, history.c.RecordsAffected))).one()
        task = (await conn.execute(sa.select(task_history.c.Status, task_history.c.RecordsInserted))).one()
    assert (run.Status, run.Details) == ("FAILED", "the server stopped during the run")
    assert task.Status == "FAILED"
    assert run.RecordsAffected == task.RecordsInserted == count_rows(tmp_path / "destination.db") > 0


async def test_cron_schedule_fires_once_and_skips_while_running(config, aiohttp_client, tmp_path):
    import dataclasses

    from tests.conftest import Api

    runtime = await create_runtime(dataclasses.replace(config, schedule_seconds=0.2))
    api = Api(await aiohttp_client(build_app(runtime)))
    await setup_job(api, tmp_path, rows=500, name="cron")
    # a yearly schedule: the missed tick below runs, the next one is months away (no minute-boundary race)
    await api.ok("PATCH", "Jobs('cron')", json={"Scheduled": True, "ScheduledCron": "0 0 1 1 *"})
    jobs = runtime.store.table("Jobs")
    missed = utcnow() - dt.timedelta(hours=3)  # as if the server had been down for many ticks
    async with runtime.store.write() as conn:
        await conn.execute(sa.update(jobs).where(jobs.c.JobName == "cron").values(NextRun=missed))
    for _ in range(100):
        runs = (await api.ok("GET", "History?$filter=JobName eq 'cron'"))["value"]
        if runs and runs[0]["Status"] == "SUCCESS":
            break
        await asyncio.sleep(0.1)
    assert [r["TriggeredBy"] for r in runs] == ["schedule"] and runs[0]["Status"] == "SUCCESS"
    await asyncio.sleep(0.6)  # more ticks: NextRun is in the future now, so nothing more runs
    assert len((await api.ok("GET", "History?$filter=JobName eq 'cron'"))["value"]) == 1
    job = await api.ok("GET", "Jobs('cron')")
    assert dt.datetime.fromisoformat(job["NextRun"]) > utcnow()


async def test_automatic_retry_after_a_failure(config, aiohttp_client, tmp_path):
    import dataclasses

    from tests.conftest import Api

    runtime = await create_runtime(dataclasses.replace(config, retry_backoff_seconds=0.1))
    api = Api(await aiohttp_client(build_app(runtime)))
    await setup_job(api, tmp_path, rows=10, name="flaky")
    await api.ok("PATCH", "Jobs('flaky')", json={"AutomaticJobRetry": True})
    (tmp_path / "source.db").unlink()  # every run fails: the source is gone
    (tmp_path / "source.db").mkdir()
    body = await api.ok("POST", "ExecuteJob", json={"JobName": "flaky"})
    assert body["value"][0]["Status"] == "FAILED"
    for _ in range(100):
        runs = (await api.ok("GET", "History?$filter=JobName eq 'flaky'&$orderby=Id"))["value"]
        if len(runs) == 4 and all(r["Status"] == "FAILED" for r in runs):
            break
        await asyncio.sleep(0.1)
    assert [r["TriggeredBy"] for r in runs] == ["api", "retry", "retry", "retry"]
    assert all(r["Status"] == "FAILED" for r in runs)
    await asyncio.sleep(0.5)
    assert len((await api.ok("GET", "History?$filter=JobName eq 'flaky'"))["value"]) == 4  # 3 retries at most


async def test_transformations_after_job_and_on_demand(api, tmp_path):
    await setup_job(api, tmp_path, rows=300)
    await api.ok("POST", "Transformations", 201, json={
        "TransformationName": "summarise", "Connection": "dst", "TransformationTriggerMode": "AfterJob",
        "TriggerAfterJob": "nightly",
        "Query#1": "DROP TABLE IF EXISTS summary",
        "Query#2": "CREATE TABLE summary AS SELECT count(*) AS n, sum(amount) AS total FROM orders"})
    await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})
    for _ in range(100):
        runs = (await api.ok("GET", "History?$filter=JobName eq 'summarise'&$expand=Tasks"))["value"]
        if runs and runs[0]["Status"] not in ("QUEUED", "RUNNING"):
            break
        await asyncio.sleep(0.05)
    assert runs[0]["Status"] == "SUCCESS" and runs[0]["TriggeredBy"] == "afterjob"
    assert [t["Status"] for t in runs[0]["Tasks"]] == ["SUCCESS", "SUCCESS"]
    db = sqlite3.connect(tmp_path / "destination.db")
    assert db.execute("SELECT n FROM summary").fetchone()[0] == 300
    db.close()
    transformation = await api.ok("GET", "Transformations('summarise')")
    assert transformation["Status"] == "IDLE" and transformation["LastRunStatus"] == "SUCCESS"

    body = await api.ok("POST", "ExecuteJob", json={"JobName": "summarise"})  # a transformation's name runs it
    assert [r["Status"] for r in body["value"]] == ["SUCCESS", "SUCCESS"]
    await api.ok("PATCH", "Transformations('summarise')", json={"Queries": ["SELECT * FROM no_such_table"]})
    failed = await api.ok("POST", "ExecuteJob", json={"JobName": "summarise"})
    assert failed["value"][0]["Status"] == "FAILED" and "no_such_table" in failed["value"][0]["Result"]
    log = (await api.ok("POST", "GetJobLog", json={"JobName": "summarise"}))["value"][0]["Log"]
    assert "error" in log


async def test_a_run_that_fails_before_its_tasks_gives_each_task_its_error(api, tmp_path):
    """A source that cannot be reached fails the run before any task starts: ExecuteJob's Result says why."""
    await setup_job(api, tmp_path)
    await api.ok("POST", "Connections", 201, json={"Name": "nowhere", "ProviderName": "PostgreSQL",
                                                   "ConnectionString": "Server=127.0.0.1;Port=1;Database=x;User=u"})
    await api.ok("PATCH", "Jobs('nightly')", json={"Source": "nowhere"})
    [row] = (await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"}))["value"]
    assert row["Status"] == "FAILED" and "PostgreSQL" in row["Result"] and row["Detail"] == row["Result"]
    [run] = (await api.ok("GET", "History?$filter=JobName eq 'nightly'&$expand=Tasks"))["value"]
    assert run["Status"] == "FAILED" and run["Tasks"][0]["Details"] == run["Details"]


async def test_hooks_and_mail(config, aiohttp_client, aiohttp_server, tmp_path):
    import dataclasses
    import socket

    from aiohttp import web
    from aiosmtpd.controller import Controller

    from tests.conftest import Api

    calls: list[tuple[str, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        calls.append((request.path, await request.json()))
        return web.json_response({"CancelJob": request.path == "/pre-cancel"})

    hooks = web.Application()
    hooks.router.add_post("/{name}", hook)
    hook_server = await aiohttp_server(hooks)
    base = f"http://127.0.0.1:{hook_server.port}"

    class Mailbox:
        def __init__(self) -> None:
            self.messages: list = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            self.messages.append(envelope.content.decode())
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        runtime = await create_runtime(dataclasses.replace(config, smtp_host="127.0.0.1", smtp_port=smtp_port))
        api = Api(await aiohttp_client(build_app(runtime)))
        await setup_job(api, tmp_path, rows=50)
        await api.error("PATCH", "Jobs('nightly')", 400, json={"PreJob": "file:///etc/passwd"})
        await api.ok("PATCH", "Jobs('nightly')", json={
            "PreJob": f"{base}/pre", "PostJob": f"{base}/post", "SendEmailNotification": True,
            "NotifyEmailTo": "ops@example.org", "NotifyEmailSubject": "nightly done"})
        body = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})
        assert body["value"][0]["Status"] == "SUCCESS"
        for _ in range(50):
            if len(calls) == 2 and mailbox.messages:
                break
            await asyncio.sleep(0.05)
        assert [path for path, _ in calls] == ["/pre", "/post"]
        assert calls[1][1]["Status"] == "SUCCESS" and calls[1][1]["RecordsAffected"] == 50
        assert "Subject: nightly done" in mailbox.messages[0] and "Status: SUCCESS" in mailbox.messages[0]

        await api.ok("PATCH", "Jobs('nightly')", json={"PreJob": f"{base}/pre-cancel", "EmailErrorOnly": True})
        cancelled = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})
        assert cancelled["value"][0]["Status"] == "CANCELLED"
        await asyncio.sleep(0.3)
        assert len(mailbox.messages) == 1  # EmailErrorOnly: only a FAILED run is mailed, and a cancel is no error

        await api.ok("PATCH", "Jobs('nightly')", json={"PreJob": "http://127.0.0.1:9/unreachable"})
        survived = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})
        assert survived["value"][0]["Status"] == "SUCCESS"  # a failing hook is logged, never fails the run
        log = (await api.ok("POST", "GetJobLog", json={"JobName": "nightly"}))["value"][0]["Log"]
        assert "PreJob hook failed" in log
    finally:
        controller.stop()


async def test_fifty_jobs_at_once(config, aiohttp_client, tmp_path):
    import dataclasses

    from tests.conftest import Api

    runtime = await create_runtime(dataclasses.replace(config, workers=4, runs_per_connection=2))
    api = Api(await aiohttp_client(build_app(runtime)))
    source = tmp_path / "source.db"
    make_source(source, 100)
    await api.ok("POST", "Connections", 201, json={"Name": "src", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={source}"})
    for i in range(50):
        await api.ok("POST", "Connections", 201, json={"Name": f"dst{i}", "ProviderName": "SQLite",
                                                       "ConnectionString": f"Database={tmp_path / f'd{i}.db'}"})
        await api.ok("POST", "Jobs", 201, json={"JobName": f"job{i}", "Source": "src", "Destination": f"dst{i}",
                                                "Query#1": "REPLICATE [orders]"})
    answers = await asyncio.gather(*(api.ok("POST", "ExecuteJob", json={"JobName": f"job{i}"}) for i in range(50)))
    assert all(a["value"][0]["Status"] == "SUCCESS" for a in answers)
    history = (await api.ok("GET", "History?$top=100"))["value"]
    assert len(history) == 50 and {h["JobName"] for h in history} == {f"job{i}" for i in range(50)}
    assert all(h["Status"] == "SUCCESS" and h["RecordsAffected"] == 100 for h in history)
    assert all(count_rows(tmp_path / f"d{i}.db") == 100 for i in range(50))


async def test_cancel_while_queued_and_recovery_requeues_with_retry(config, aiohttp_client, tmp_path):
    import dataclasses

    from tests.conftest import Api

    # an API-only node runs nothing: the run stays QUEUED, and CancelJob ends it at once
    api_only = await create_runtime(dataclasses.replace(config, role="api"))
    api = Api(await aiohttp_client(build_app(api_only)))
    await setup_job(api, tmp_path, rows=100)
    queued = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly", "Async": True})
    assert queued["value"][0]["Status"] == "QUEUED"
    cancelled = await api.ok("POST", "CancelJob", json={"JobName": "nightly"})
    assert cancelled["value"][0] == {"JobName": "nightly", "RunId": queued["value"][0]["RunId"],
                                     "Status": "CANCELLED"}
    assert (await api.ok("GET", "History"))["value"][0]["Status"] == "CANCELLED"

    # a run left RUNNING by a dead server, for a job with AutomaticJobRetry: failed, then queued again and run
    await api.ok("PATCH", "Jobs('nightly')", json={"AutomaticJobRetry": True})
    history, jobs = api_only.store.table("History"), api_only.store.table("Jobs")
    now = utcnow()
    async with api_only.store.write() as conn:
        await conn.execute(history.insert().values(RunId=str(uuid.uuid4()), JobName="nightly", Status="RUNNING",
                                                   RunStartDate=now, _Lease=now - dt.timedelta(seconds=1),
                                                   _Options={"force_full": False, "task_ids": None}))
        await conn.execute(sa.update(jobs).values(Status="RUNNING"))
    worker = await create_runtime(dataclasses.replace(config, retry_backoff_seconds=0.05))
    api = Api(await aiohttp_client(build_app(worker)))
    for _ in range(100):
        runs = (await api.ok("GET", "History?$orderby=Id"))["value"]
        if len(runs) == 3 and runs[2]["Status"] == "SUCCESS":
            break
        await asyncio.sleep(0.05)
    assert [(r["Status"], r["TriggeredBy"]) for r in runs][1:] == [("FAILED", None), ("SUCCESS", "retry")]
    assert count_rows(tmp_path / "destination.db") == 100


async def test_graceful_cancel_during_a_reconcile(config, aiohttp_client, tmp_path):
    import dataclasses

    from tests.conftest import Api

    runtime = await create_runtime(config)
    api = Api(await aiohttp_client(build_app(runtime)))
    await setup_job(api, tmp_path, rows=150_000, batch_size=5000)
    await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})  # a full copy first
    assert count_rows(tmp_path / "destination.db") == 150_000
    await api.ok("POST", "ExecuteJob", json={"JobName": "nightly", "ForceFullSync": True, "Async": True})
    for _ in range(200):
        status = await api.ok("POST", "GetJobStatus", json={"JobName": "nightly"})
        if status["Status"] == "RUNNING" and status["Progress"] > 0:
            break
        await asyncio.sleep(0.02)
    await api.ok("POST", "CancelJob", json={"JobName": "nightly"})  # graceful: after the batch being written
    for _ in range(300):
        run = (await api.ok("GET", "History?$orderby=Id desc&$top=1"))["value"][0]
        if run["Status"] not in ("QUEUED", "RUNNING"):
            break
        await asyncio.sleep(0.05)
    assert run["Status"] in ("CANCELLED", "SUCCESS")  # a reconcile this small may finish first
    assert count_rows(tmp_path / "destination.db") == 150_000  # a reconcile never loses committed rows
    final = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})
    assert final["value"][0]["Status"] == "SUCCESS"
    assert dataclasses.is_dataclass(runtime.config)


async def test_log_verbosity_and_a_busy_schedule_is_skipped(config, aiohttp_client, tmp_path):
    import dataclasses

    from tests.conftest import Api

    runtime = await create_runtime(dataclasses.replace(config, schedule_seconds=0.1))
    api = Api(await aiohttp_client(build_app(runtime)))
    await setup_job(api, tmp_path, rows=3000, batch_size=1000)
    await api.ok("POST", "ExecuteJob", json={"JobName": "nightly"})  # Verbosity 2 (Info): no transfer lines
    info = (await api.ok("POST", "GetJobLog", json={"JobName": "nightly"}))["value"][0]["Log"]
    assert " INFO " in info and " TRANSFER " not in info
    await api.ok("PATCH", "Jobs('nightly')", json={"Verbosity": 3})
    second = await api.ok("POST", "ExecuteJob", json={"JobName": "nightly", "ForceFullSync": True})
    transfer = (await api.ok("POST", "GetJobLog", json={"JobName": "nightly", "RunId": second["value"][0]["RunId"]}
                             ))["value"][0]["Log"]
    assert " TRANSFER " in transfer and "committed" in transfer

    # a job still running when its tick comes: no second run, and the skip is in the running run's log
    history, jobs = runtime.store.table("History"), runtime.store.table("Jobs")
    running_id = str(uuid.uuid4())
    now = utcnow()
    async with runtime.store.write() as conn:  # a run held by a live worker elsewhere (its lease is fresh)
        await conn.execute(history.insert().values(RunId=running_id, JobName="nightly", Status="RUNNING",
                                                   RunStartDate=now, _Lease=now + dt.timedelta(minutes=5),
                                                   _Owner="elsewhere:1"))
        await conn.execute(sa.update(jobs).values(Status="RUNNING", Scheduled=True, ScheduledCron="0 0 1 1 *",
                                                  NextRun=now - dt.timedelta(minutes=1)))
    for _ in range(50):
        log = (await api.ok("POST", "GetJobLog", json={"JobName": "nightly", "RunId": running_id}))["value"][0]
        if "skipped" in log["Log"]:
            break
        await asyncio.sleep(0.05)
    assert "a scheduled run was skipped" in log["Log"]
    runs = (await api.ok("GET", "History?$filter=JobName eq 'nightly'"))["value"]
    assert len(runs) == 3 and not any(r["TriggeredBy"] == "schedule" for r in runs)
    job = await api.ok("GET", "Jobs('nightly')")
    assert dt.datetime.fromisoformat(job["NextRun"]) > utcnow()  # the tick was consumed, not queued


async def test_scheduled_transformation(config, aiohttp_client, tmp_path):
    import dataclasses

    from tests.conftest import Api

    runtime = await create_runtime(dataclasses.replace(config, schedule_seconds=0.1))
    api = Api(await aiohttp_client(build_app(runtime)))
    await setup_job(api, tmp_path, rows=10)
    await api.ok("POST", "Transformations", 201, json={
        "TransformationName": "tick", "Connection": "dst", "TransformationTriggerMode": "Scheduled",
        "ScheduledCron": "0 0 1 1 *", "Query#1": "CREATE TABLE IF NOT EXISTS ticks (n INTEGER)",
        "Query#2": "INSERT INTO ticks VALUES (1)"})
    transformations = runtime.store.table("Transformations")
    async with runtime.store.write() as conn:  # created two years ago: a yearly tick is due
        await conn.execute(sa.update(transformations).values(Created=utcnow() - dt.timedelta(days=731)))
    for _ in range(100):
        runs = (await api.ok("GET", "History?$filter=JobName eq 'tick'"))["value"]
        if runs and runs[0]["Status"] == "SUCCESS":
            break
        await asyncio.sleep(0.05)
    assert runs[0]["TriggeredBy"] == "schedule" and runs[0]["Status"] == "SUCCESS"
    await asyncio.sleep(0.4)  # its next tick is next January: no second run
    assert len((await api.ok("GET", "History?$filter=JobName eq 'tick'"))["value"]) == 1
    assert count_rows(tmp_path / "destination.db", "ticks") == 1


async def _wait_for_end(api, name: str) -> dict:
    for _ in range(600):
        run = (await api.ok("GET", f"History?$filter=JobName eq '{name}'&$orderby=Id desc&$top=1"))["value"][0]
        if run["Status"] not in ("QUEUED", "RUNNING"):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run of {name} did not end")


async def test_cancel_while_refreshing_keeps_the_old_table(api, tmp_path):
    source = tmp_path / "source.db"
    db = sqlite3.connect(source)
    db.execute("CREATE TABLE events (kind TEXT, amount REAL)")  # no key, no check column: a refresh swap
    db.executemany("INSERT INTO events VALUES (?, ?)", ((f"k{i % 13}", i * 0.5) for i in range(300_000)))
    db.commit()
    db.close()
    await api.ok("POST", "Connections", 201, json={"Name": "src", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={source}"})
    await api.ok("POST", "Connections", 201, json={"Name": "dst", "ProviderName": "SQLite",
                                                   "ConnectionString": f"Database={tmp_path / 'destination.db'}"})
    await api.ok("POST", "Jobs", 201, json={"JobName": "events", "Source": "src", "Destination": "dst",
                                            "BatchSize": 5000, "Query#1": "REPLICATE [events]"})
    assert (await api.ok("POST", "ExecuteJob", json={"JobName": "events"}))["value"][0]["Status"] == "SUCCESS"
    await api.ok("POST", "ExecuteJob", json={"JobName": "events", "Async": True})
    for _ in range(500):
        status = await api.ok("POST", "GetJobStatus", json={"JobName": "events"})
        if status["Status"] == "RUNNING" and status["Progress"] > 0:
            break
        await asyncio.sleep(0.01)
    await api.ok("POST", "CancelJob", json={"JobName": "events", "Graceful": False})
    assert (await _wait_for_end(api, "events"))["Status"] == "CANCELLED"
    assert count_rows(tmp_path / "destination.db", "events") == 300_000  # the old table, whole


async def test_cancel_a_transformation_query(api, tmp_path):
    await setup_job(api, tmp_path, rows=10)
    await api.ok("POST", "Transformations", 201, json={
        "TransformationName": "slow", "Connection": "dst",
        "Query#1": "CREATE TABLE marks (n INTEGER)", "Query#2": "INSERT INTO marks VALUES (1)",
        "Query#3": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "
                   "SELECT count(*) FROM c"})
    await api.ok("POST", "ExecuteJob", json={"JobName": "slow", "Async": True})
    for _ in range(500):
        run = (await api.ok("GET", "History?$filter=JobName eq 'slow'&$expand=Tasks"))["value"][0]
        if any(t["Status"] == "RUNNING" and t["TaskId"] == 3 for t in run["Tasks"]):
            break
        await asyncio.sleep(0.01)
    cancelled = await api.ok("POST", "CancelJob", json={"JobName": "slow", "Graceful": False})
    assert cancelled["value"][0]["Status"] == "CANCELLING"
    assert (await _wait_for_end(api, "slow"))["Status"] == "CANCELLED"
    db = sqlite3.connect(tmp_path / "destination.db")  # the transformation's transaction was rolled back
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'marks'").fetchone()[0] == 0
    db.close()
