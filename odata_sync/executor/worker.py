"""Workers inside the server process: claim queued runs, drive the replication engine, persist what it reports.

The engine yields events; this module turns them into TaskHistory/History rows, the Tasks' and Jobs' LastRun
columns, the run log (GetJobLog) and in-memory progress (GetJobStatus). Cancellation is graceful (the engine stops
after the batch being written commits) or immediate (the engine task is cancelled: the batch in flight rolls back).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from odata_sync.concurrency import both
from odata_sync.connectors import open_connector
from odata_sync.errors import ODataSyncError
from odata_sync.executor import notify, runs
from odata_sync.executor.notify import SmtpSettings
from odata_sync.executor.runlog import RunLog
from odata_sync.executor.schedule import Scheduler
from odata_sync.replication import progress as events
from odata_sync.replication.engine import run_job
from odata_sync.replication.settings import JobSettings, TaskSettings
from odata_sync.service.common import touch
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
#: Seconds the workers get to write how their runs ended when the server stops.
STOP_GRACE = 10.0
STOPPED = "the server stopped during the run"


@dataclass
class TaskProgress:
    task_id: int | None
    query: str
    status: str = "QUEUED"
    rows_done: int = 0
    estimated: int | None = None
    affected: int = 0
    detail: str | None = None
    error: str | None = None


@dataclass
class ActiveRun:
    history_id: int
    run_id: str
    job_name: str
    started: float = field(default_factory=time.monotonic)
    stage: str = "starting"
    tasks: dict[int | None, TaskProgress] = field(default_factory=dict)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    status: str | None = None  # how it ended
    details: str | None = None
    transformation: bool = False
    job_row: dict | None = None

    @property
    def progress(self) -> int:
        done = sum(t.rows_done for t in self.tasks.values())
        estimate = sum(t.estimated or t.rows_done for t in self.tasks.values())
        return min(99, int(100 * done / estimate)) if estimate else 0


class Executor:
    def __init__(self, store: Store, plain_connection_string, *, workers: int = 2, smtp: SmtpSettings | None = None,
                 retry_backoff: float | None = None, schedule_every: float = 15.0, per_connection: int = 2) -> None:
        self.store = store
        self.smtp = smtp or SmtpSettings()
        self.plain = plain_connection_string  # stored (encrypted) connection string -> plain text
        self.workers = workers
        self.retry_backoff = None if retry_backoff is None else dt.timedelta(seconds=retry_backoff)
        self.per_connection = per_connection  # runs per connection across every node (checked when claiming)
        self.scheduler = Scheduler(store, self, every=schedule_every)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}"  # lets a restarted server on this machine see its dead runs at once
        self.active: dict[str, ActiveRun] = {}  # RunId -> run on this node
        self.finished: dict[str, asyncio.Event] = {}  # RunId -> set when the run ends on this node
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task] = []  # the workers, the lease heartbeat and the scheduler
        self._workers: list[asyncio.Task] = []
        self.runlog = RunLog(store)

    # ---- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        failed = await runs.fail_interrupted(self.store, self.host, self.retry_backoff)
        if failed:
            log.warning("%d run(s) left running by a stopped server were marked FAILED", failed)
        self._workers = [asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self.workers)]
        self._tasks = [*self._workers, asyncio.create_task(self._heartbeat(), name="run-leases"),
                       asyncio.create_task(self.scheduler.run(), name="scheduler")]

    async def stop(self) -> None:
        """Cancel the runs going (each ends FAILED: the server stopped) and let the workers write that, for up to
        ``STOP_GRACE`` seconds, before every loop is cancelled: a store call cut short would leave its thread
        answering an event loop that is gone."""
        self._stopping = True
        for run in list(self.active.values()):
            if run.task is not None:
                run.task.cancel()
        self._wake.set()
        if self._workers:
            await asyncio.wait(self._workers, timeout=STOP_GRACE)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks, self._workers = [], []

    def wake(self) -> None:
        self._wake.set()

    def waiter(self, run_id: str) -> asyncio.Event:
        return self.finished.setdefault(run_id, asyncio.Event())

    # ---- cancellation --------------------------------------------------------------------------------------
    def cancel_local(self, job_name: str, graceful: bool) -> bool:
        for run in self.active.values():
            if run.job_name == job_name:
                run.stage = "cancelling"
                run.cancel.set()
                if not graceful and run.task is not None:
                    run.task.cancel()
                return True
        return False

    # ---- loops ---------------------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while not self._stopping:
            try:
                claimed = await runs.claim(self.store, self.owner, self.per_connection)
            except Exception:  # a store hiccup must not kill the worker; the next poll retries
                log.exception("claiming a run failed")
                claimed = None
            if claimed is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                if not self._stopping:  # (every worker sees the stop)
                    self._wake.clear()
                continue
            await self._run(claimed)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                cancelling = await runs.renew(self.store, self.owner,
                                              [r.history_id for r in self.active.values()])
                # runs of nodes that died meanwhile
                await runs.fail_interrupted(self.store, self.host, self.retry_backoff)
            except Exception:
                log.exception("renewing run leases failed")
                continue
            for name in cancelling:
                self.cancel_local(name, graceful=True)

    # ---- one run -------------------------------------------------------------------------------------------
    async def _run(self, claimed: dict) -> None:
        run = ActiveRun(claimed["Id"], claimed["RunId"], claimed["JobName"])
        self.active[run.run_id] = run
        options = claimed.get("_Options") or {}
        try:
            run.task = asyncio.create_task(self._drive(run, options))
            if self._stopping:  # (claimed as the server began to stop)
                run.task.cancel()
            try:
                await asyncio.wait({run.task})
            except asyncio.CancelledError:  # the server stopped before the run ended: stop the run too, and say so
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
                await self._end(run, "FAILED", STOPPED)
                raise
            if run.task.cancelled():
                await (self._end(run, "FAILED", STOPPED) if self._stopping else
                       self._end(run, "CANCELLED", "cancelled: the batch in flight was rolled back"))
            elif run.task.exception() is not None:
                exc = run.task.exception()
                log.error("run %s of %s failed: %s", run.run_id, run.job_name, _message(exc))
                await self._end(run, "FAILED", _message(exc))
        finally:
            self.active.pop(run.run_id, None)
            self.runlog.forget(run.history_id)
            self._release(run)
        if run.details == STOPPED:
            return  # (no hooks, retries or jobs after it: the server is stopping)
        if run.job_row is not None:
            await self._after(run)
        if run.status == "FAILED" and await runs.retry_if_wanted(self.store, run.job_name, options,
                                                                   self.retry_backoff):
            self.wake()
        if run.status == "SUCCESS" and not run.transformation and await runs.queue_after_job(self.store, run.job_name):
            self.wake()

    async def _drive(self, run: ActiveRun, options: dict) -> None:
        if options.get("transformation"):
            await self._transform(run)
            return
        job_row, task_rows, source, destination = await self._load(run.job_name, options.get("task_ids"))
        job = JobSettings.from_row(job_row)
        run.job_row = job_row
        tasks = [TaskSettings.from_row(t) for t in task_rows]
        if job_row.get("PreJob") and await self._pre_job(run, job_row["PreJob"], job.verbosity):
            return
        for t in tasks:
            run.tasks[t.task_id] = TaskProgress(t.task_id, t.query)
        timeout = job.command_timeout or 30
        recording = _Recording(self.runlog.write(run.history_id, 2, job.verbosity,
                                                 f"run {run.run_id} of job {run.job_name} started: {len(tasks)} task(s)"))
        try:
            src = open_connector(source[0], source[1], timeout=timeout)
            dst = open_connector(destination[0], destination[1], timeout=timeout)
            try:
                await both(src.open(), dst.open())
                async for event in run_job(job, tasks, src, dst, force_full=bool(options.get("force_full")),
                                           cancel=run.cancel, run_id=run.run_id):
                    if isinstance(event, events.TaskFinished | events.RunFinished):
                        await recording.done()  # (a task's or the run's end is written after its progress)
                        await self._record(run, job, event)
                    else:
                        await recording.then(self._record(run, job, event))
            finally:
                await both(src.close(), dst.close())
            await recording.done()
        except ODataSyncError as exc:
            await recording.settle()
            await self.runlog.write(run.history_id, 1, job.verbosity, f"error: {exc.message}")
            await self._end(run, "FAILED", exc.message)
        finally:  # (a cancelled run's progress so far is written before it is marked CANCELLED)
            await recording.settle()

    # ---- events ------------------------------------------------------------------------------------------
    def _payload(self, run: ActiveRun) -> dict:
        return {"JobName": run.job_name, "RunId": run.run_id, "Status": run.status or "RUNNING",
                "RecordsAffected": sum(t.affected for t in run.tasks.values()),
                "Errors": [t.error for t in run.tasks.values() if t.error] + ([run.details] if run.details and
                                                                               run.status == "FAILED" else [])}

    async def _pre_job(self, run: ActiveRun, url: str, verbosity: int) -> bool:
        """Call the PreJob hook; True when it asked to cancel the run (which then ends CANCELLED)."""
        try:
            answer = await notify.call_hook(url, self._payload(run))
        except notify.HookFailed as exc:
            await self.runlog.write(run.history_id, 1, verbosity, f"PreJob hook failed (the run goes on): {exc}")
            return False
        if notify.wants_cancel(answer):
            await self.runlog.write(run.history_id, 2, verbosity, "the PreJob hook cancelled the run")
            await self._end(run, "CANCELLED", "cancelled by the PreJob hook")
            return True
        return False

    async def _after(self, run: ActiveRun) -> None:
        """PostJob hook and e-mail: reported in the log when they fail, never failing the run."""
        job = run.job_row
        verbosity = job.get("Verbosity") or 2
        if job.get("PostJob"):
            try:
                await notify.call_hook(job["PostJob"], self._payload(run))
            except notify.HookFailed as exc:
                await self.runlog.write(run.history_id, 1, verbosity, f"PostJob hook failed: {exc}")
        wants_mail = job.get("SendEmailNotification") and job.get("NotifyEmailTo")
        if wants_mail and (run.status == "FAILED" or not job.get("EmailErrorOnly")):
            if not self.smtp.configured:
                await self.runlog.write(run.history_id, 1, verbosity, "no mail sent: ODATA_SYNC_SMTP_HOST is not set")
                return
            payload = self._payload(run)
            subject = job.get("NotifyEmailSubject") or f"odata-sync: job {run.job_name} {run.status}"
            body = "\n".join([f"Job: {run.job_name}", f"Run: {run.run_id}", f"Status: {run.status}",
                              f"Records affected: {payload['RecordsAffected']}",
                              *(f"Error: {e}" for e in payload["Errors"])])
            try:
                await notify.send_mail(self.smtp, job["NotifyEmailTo"], subject, body)
            except notify.HookFailed as exc:
                await self.runlog.write(run.history_id, 1, verbosity, str(exc))

    async def _transform(self, run: ActiveRun) -> None:
        """A transformation: its queries in order in its connection, in one transaction where the dialect allows."""
        run.transformation = True
        table, connections = self.store.table("Transformations"), self.store.table("Connections")
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.TransformationName == run.job_name))
                   ).mappings().one()
            target = (await conn.execute(sa.select(connections.c.ProviderName, connections.c.ConnectionString)
                                         .where(connections.c.Name == row["Connection"]))).first()
        verbosity = row["Verbosity"] or 2
        if target is None:
            raise ODataSyncError(f"The connection '{row['Connection']}' does not exist any more")
        queries = row["Queries"] or []
        await self.runlog.write(run.history_id, 2, verbosity,
                                f"transformation {run.job_name} started: {len(queries)} quer{'y' if len(queries) == 1 else 'ies'}")
        started = time.monotonic()
        affected = 0
        try:
            async with open_connector(target.ProviderName, self.plain(target.ConnectionString) or "",
                                      timeout=row["CommandTimeout"] or 30) as connector:
                await self._run_queries(run, connector, queries, verbosity)
                affected = sum(t.affected for t in run.tasks.values())
        except ODataSyncError as exc:
            step = next((t for t in run.tasks.values() if t.status == "RUNNING"), None)
            if step is not None:
                await self._task_update(run, step.task_id, Status="FAILED", Details=exc.message, RunEndDate=utcnow())
            await self.runlog.write(run.history_id, 1, verbosity, f"error: {exc.message}")
            await self._end(run, "FAILED", exc.message)
            return
        await self.runlog.write(run.history_id, 2, verbosity,
                                f"transformation SUCCESS in {int((time.monotonic() - started) * 1000)} ms")
        await self._end(run, "SUCCESS", None, {"RecordsAffected": affected})

    async def _run_queries(self, run: ActiveRun, connector, queries: list[str], verbosity: int) -> None:
        transactional = connector.provider != "MySQL"  # MySQL commits DDL implicitly: run statement by statement
        context = connector.transaction() if transactional else contextlib.nullcontext()
        async with context:
            for index, query in enumerate(queries, start=1):
                run.stage = f"query {index} of {len(queries)}"
                step = run.tasks[index] = TaskProgress(index, query, status="RUNNING")
                await self._task_update(run, index, Status="RUNNING", RunStartDate=utcnow())
                began = time.monotonic()
                step.affected = max(0, await connector.execute(query, []) or 0)
                step.status = "SUCCESS"
                await self._task_update(run, index, Status="SUCCESS", RunEndDate=utcnow(),
                                        Runtime=int((time.monotonic() - began) * 1000),
                                        RecordsAffected=step.affected)
                await self.runlog.write(run.history_id, 3, verbosity,
                                        f"query {index}: {step.affected} rows affected")

    async def _load(self, job_name: str, task_ids: list | None):
        jobs, tasks, connections = (self.store.table(n) for n in ("Jobs", "Tasks", "Connections"))
        async with self.store.engine.connect() as conn:
            job = (await conn.execute(sa.select(jobs).where(jobs.c.JobName == job_name))).mappings().one()
            query = sa.select(tasks).where(tasks.c.JobName == job_name).order_by(tasks.c.Index)
            if task_ids is not None:
                query = query.where(tasks.c.TaskId.in_(task_ids))
            task_rows = [dict(r) for r in (await conn.execute(query)).mappings().all()]
            found = {}
            for name in (job["Source"], job["Destination"]):
                row = (await conn.execute(sa.select(connections.c.ProviderName, connections.c.ConnectionString)
                                          .where(connections.c.Name == name))).first()
                if row is None:
                    raise ODataSyncError(f"The connection '{name}' does not exist any more")
                found[name] = (row.ProviderName, self.plain(row.ConnectionString) or "")
        return dict(job), task_rows, found[job["Source"]], found[job["Destination"]]

    async def _record(self, run: ActiveRun, job: JobSettings, event) -> None:
        tasks_table = self.store.table("Tasks")
        level = job.verbosity
        if isinstance(event, events.TaskStarted):
            run.stage = f"task {event.index}: {event.mode}"
            progress = run.tasks.setdefault(event.task_id, TaskProgress(event.task_id, event.query))
            progress.status, progress.estimated = "RUNNING", event.estimated_rows
            await self._task_update(run, event.task_id, (2, level, f"task {event.index} [{event.table}] started: "
                                                            f"{event.sync_type} ({event.mode}: {event.reason})"),
                                    Status="RUNNING", RunStartDate=utcnow())
        elif isinstance(event, events.TaskStage):
            run.stage = f"task {event.index}: {event.stage}"
            await self.runlog.write(run.history_id, 4, level, f"task {event.index}: {event.stage}")
        elif isinstance(event, events.TaskWarning):
            await self.runlog.write(run.history_id, 2, level, f"task {event.index} warning: {event.message}")
        elif isinstance(event, events.BatchCommitted):
            progress = run.tasks.setdefault(event.task_id, TaskProgress(event.task_id, ""))
            progress.rows_done, progress.estimated = event.rows_done, event.estimated_rows
            progress.affected = event.inserted + event.updated + event.deleted
            await self._task_update(run, event.task_id, (3, level, f"task {event.index}: committed {event.rows} rows "
                                                            f"({event.rows_done} read; {event.inserted} inserted, "
                                                            f"{event.updated} updated, {event.deleted} deleted)"),
                                    RecordsAffected=progress.affected, RecordsInserted=event.inserted,
                                    RecordsUpdated=event.updated, RecordsDeleted=event.deleted)
        elif isinstance(event, events.TaskFinished):
            progress = run.tasks.setdefault(event.task_id, TaskProgress(event.task_id, event.query))
            progress.status, progress.affected, progress.error = event.status, event.affected, event.error
            now = utcnow()
            text = f"task {event.index} [{event.table}] {event.status}: {event.affected} rows affected " \
                   f"in {event.runtime_ms} ms"
            async with self.store.write() as conn:  # one commit: the task's row, its LastRun and its log line
                await self._task_update(run, event.task_id, (1 if event.error else 2, level, text + (
                    f" - {event.error}" if event.error else "")), conn=conn, Status=event.status, RunEndDate=now,
                    Runtime=event.runtime_ms, RecordsAffected=event.affected, RecordsInserted=event.inserted,
                    RecordsUpdated=event.updated, RecordsDeleted=event.deleted, RecordsFailed=event.failed,
                    Details=event.error, Table=event.table)
                if event.task_id is not None:
                    await touch(conn, tasks_table, tasks_table.c.TaskId == event.task_id, now, LastRun=now,
                                LastRunStatus=event.status, LastRunRecords=event.affected)
        elif isinstance(event, events.RunFinished):
            failed = [t for t in event.tasks if t.error]
            details = "; ".join(f"task {t.index}: {t.error}" for t in failed) or None
            sync = "full" if any(t.sync_type == events.FULL for t in event.tasks) else events.INCREMENTAL
            await self._end(run, event.status, details, {
                "RecordsAffected": sum(t.affected for t in event.tasks), "RecordsInserted": event.inserted,
                "RecordsUpdated": event.updated, "RecordsDeleted": sum(t.deleted for t in event.tasks),
                "RecordsFailed": sum(t.failed for t in event.tasks)}, sync,
                log=(2, level, f"run {event.status} in {event.runtime_ms} ms"))

    async def _task_update(self, run: ActiveRun, task_id: int | None, log: tuple | None = None, conn=None,
                           **values) -> None:
        """Update the task's TaskHistory row, and write its log line (level, verbosity, text) in the same commit;
        in ``conn``'s transaction when given."""
        if conn is None:
            async with self.store.write() as own:
                await self._task_update(run, task_id, log, own, **values)
            return
        task_history = self.store.table("TaskHistory")
        await conn.execute(sa.update(task_history).where(task_history.c.HistoryId == run.history_id,
                                                         task_history.c.TaskId == task_id).values(**values))
        if log is not None:
            await self.runlog.write(run.history_id, *log, conn=conn)

    async def _end(self, run: ActiveRun, status: str, details: str | None, counts: dict | None = None,
                   sync_type: str | None = None, log: tuple | None = None) -> None:
        """Write how the run ended (and its last log line, when given), then let whoever waits for it go on: the
        run's result is final, closing its connections and the PostJob hook need not keep them waiting."""
        history, task_history = self.store.table("History"), self.store.table("TaskHistory")
        now = utcnow()
        async with self.store.write() as conn:
            current = (await conn.execute(sa.select(history.c.Status).where(history.c.Id == run.history_id))).scalar()
            if current in runs.FINISHED:
                return
            run.status, run.details = status, details
            if counts is None and not run.transformation:
                counts = await _committed_counts(conn, task_history, run.history_id)
            await runs.finish_run(conn, self.store, run.history_id, run.job_name, status, details, now, counts,
                                  sync_type, transformation=run.transformation)
            ended: dict = {"Status": "CANCELLED" if status == "CANCELLED" else "FAILED", "RunEndDate": now}
            if status == "FAILED" and details:  # the run's error is each unfinished task's (ExecuteJob's Result)
                ended["Details"] = sa.func.coalesce(task_history.c.Details, details)
            await conn.execute(sa.update(task_history).where(
                task_history.c.HistoryId == run.history_id, task_history.c.Status.in_(("QUEUED", "RUNNING")))
                .values(**ended))
            if log is not None:
                await self.runlog.write(run.history_id, *log, conn=conn)
        self._release(run)

    def _release(self, run: ActiveRun) -> None:
        """Wake the callers waiting for the run (only callers that asked wait: nothing piles up)."""
        waiting = self.finished.pop(run.run_id, None)
        if waiting is not None:
            waiting.set()


COUNTS = ("RecordsAffected", "RecordsInserted", "RecordsUpdated", "RecordsDeleted", "RecordsFailed")


async def _committed_counts(conn, task_history: sa.Table, history_id: int) -> dict:
    """A run that ended without the engine's summary (cancelled at once, or crashed) still reports the batches its
    tasks committed (TaskHistory keeps them per batch). A transformation's queries roll back together: not here."""
    sums = (await conn.execute(sa.select(*(sa.func.coalesce(sa.func.sum(task_history.c[n]), 0) for n in COUNTS))
                               .where(task_history.c.HistoryId == history_id))).one()
    return dict(zip(COUNTS, (int(v) for v in sums), strict=True))


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ODataSyncError) else f"{type(exc).__name__}: {exc}"


class _Recording:
    """A run's progress written to the store in the order it happened, each write chained after the one before on
    a task of its own, so the engine goes on with the next batch instead of waiting for the store (up to ``AHEAD``
    writes: a store slower than the batches holds the engine back rather than piling writes up)."""

    AHEAD = 32

    def __init__(self, first: Coroutine[Any, Any, None]) -> None:
        self._pending = 0
        self._last: asyncio.Task = self._start(first)

    def _start(self, write: Coroutine[Any, Any, None]) -> asyncio.Task:
        self._pending += 1
        task = asyncio.ensure_future(write)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, _task: asyncio.Task) -> None:
        self._pending -= 1

    async def then(self, write: Coroutine[Any, Any, None]) -> None:
        if self._pending >= self.AHEAD:
            try:
                await self.done()
            except BaseException:
                write.close()
                raise
        self._last = self._start(self._after(self._last, write))

    @staticmethod
    async def _after(previous: asyncio.Task, write: Coroutine[Any, Any, None]) -> None:
        try:
            await previous
        except BaseException:
            write.close()
            raise
        await write

    async def done(self) -> None:
        """Wait for every write so far (cancelling the waiter does not cancel them); the first failure raises."""
        await asyncio.shield(self._last)

    async def settle(self) -> None:
        """Wait for every write so far, whether or not one failed."""
        with contextlib.suppress(Exception):
            await self.done()
