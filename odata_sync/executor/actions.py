"""ExecuteJob, ExecuteQuery, CancelJob, GetJobStatus and GetJobLog, over the run queue and the workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import sqlalchemy as sa

from odata_sync.errors import BadRequest, NotFound
from odata_sync.executor import runs
from odata_sync.executor.worker import ActiveRun, Executor
from odata_sync.odata.hooks import ActionCall
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow

WAIT_POLL = 0.5  # seconds between store checks while waiting for a run another node may be running


class JobActions:
    def __init__(self, store: Store, executor: Executor) -> None:
        self.store = store
        self.executor = executor

    async def _target(self, call: ActionCall) -> tuple[str, bool]:
        """The job the call names, or (CData: "Execute a Job or a Transformation") a transformation by name or id
        when no job has that name or id: (name, is a transformation)."""
        name, job_id = call.params.get("JobName"), call.params.get("JobId")
        transformation = await _transformation_named(self.store, name, job_id)
        if transformation is not None:
            return transformation, True
        return await runs.job_name_of(self.store, name, job_id), False

    # ---- ExecuteJob / ExecuteQuery -------------------------------------------------------------------------
    async def execute_job(self, call: ActionCall) -> list[dict]:
        return await self._execute(call, queries=None)

    async def execute_query(self, call: ActionCall) -> list[dict]:
        queries = [q for q in call.params.get("Query") or [] if q]
        if not queries:
            raise BadRequest("ExecuteQuery needs Query#1..N naming tasks of the job", target="Query")
        return await self._execute(call, queries=queries)

    async def _execute(self, call: ActionCall, queries: list[str] | None) -> list[dict]:
        job_name, transformation = await self._target(call)
        if transformation and queries is not None:
            raise BadRequest("ExecuteQuery runs tasks of a job; run a transformation with ExecuteJob")
        params = call.params
        wait = params.get("WaitForResults")
        if wait is None:
            wait = not params.get("Async", False)
        timeout = params.get("Timeout") or 0
        history_id, run_id = await runs.enqueue(self.store, job_name, triggered_by="api",
                                                user=call.context.principal.name,
                                                force_full=bool(params.get("ForceFullSync")), queries=queries,
                                                transformation=transformation)
        done = self.executor.waiter(run_id)
        self.executor.wake()
        if wait:
            deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
            while not await self._finished(history_id):
                remaining = WAIT_POLL if deadline is None else min(WAIT_POLL, deadline - time.monotonic())
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(done.wait(), remaining)
                except TimeoutError:
                    continue
        self.executor.finished.pop(run_id, None)
        return await self._rows(job_name, history_id, run_id)

    async def _finished(self, history_id: int) -> bool:
        history = self.store.table("History")
        async with self.store.read() as session:
            rows = await session.fetch(sa.select(history.c.Status).where(history.c.Id == history_id))
        return bool(rows) and rows[0][0] in runs.FINISHED

    async def _rows(self, job_name: str, history_id: int, run_id: str) -> list[dict]:
        rows = []
        for task in await runs.task_rows(self.store, history_id):
            failed = task["Status"] == "FAILED"
            rows.append({"JobName": job_name, "RunId": run_id, "TaskId": task["TaskId"], "Query": task["Query"],
                         "Status": task["Status"], "Result": task["Details"] if failed else None,
                         "Detail": task["Details"] or _detail(task), "RunStartDate": task["RunStartDate"],
                         "RecordsAffected": task["RecordsAffected"] or 0})
        return rows

    # ---- CancelJob -----------------------------------------------------------------------------------------
    async def cancel_job(self, call: ActionCall) -> list[dict]:
        job_name, transformation = await self._target(call)
        graceful = call.params.get("Graceful", True) is not False
        cancelled_run = await runs.cancel_queued(self.store, job_name, transformation)
        if cancelled_run is not None:
            return [{"JobName": job_name, "RunId": cancelled_run, "Status": "CANCELLED"}]
        run = await runs.latest_run(self.store, job_name)
        self.executor.cancel_local(job_name, graceful)  # a run on another node sees CANCELLING at its heartbeat
        return [{"JobName": job_name, "RunId": run["RunId"] if run else None, "Status": "CANCELLING"}]

    # ---- GetJobStatus --------------------------------------------------------------------------------------
    async def get_job_status(self, call: ActionCall) -> dict:
        """One JobStatus for the job or transformation named; with none named, one per job under ``Jobs``."""
        name, job_id = call.params.get("JobName"), call.params.get("JobId")
        push = call.params.get("PushOnQuery", True) is not False
        if not name and not job_id:
            jobs = self.store.table("Jobs")
            async with self.store.read() as session:
                names = [r[0] for r in await session.fetch(sa.select(jobs.c.JobName).order_by(jobs.c.JobName))]
            statuses = [await self._status(n, push) for n in names]
            return {**dict.fromkeys(("JobId", "JobName", "RunId", "Status", "Progress", "Stage", "Detail",
                                     "RunStartDate", "EstimatedCompletion", "RecordsAffected", "Queries")),
                    "Jobs": statuses}
        job_name, transformation = await self._target(call)
        return await self._status(job_name, push, transformation)

    async def _status(self, job_name: str, push: bool, transformation: bool = False) -> dict:
        table, name_column = runs.owner(self.store, transformation)
        id_column = table.c.TransformationId if transformation else table.c.JobId
        async with self.store.read() as session:
            owner = (await session.fetch(sa.select(id_column, table.c.Status).where(name_column == job_name)))[0]
        run = await runs.latest_run(self.store, job_name)
        active = next((r for r in self.executor.active.values() if run and r.run_id == run["RunId"]), None)
        tasks = await runs.task_rows(self.store, run["Id"]) if run else []
        status = {"JobId": owner[0], "JobName": job_name, "RunId": run["RunId"] if run else None,
                  "Status": owner[1], "Progress": 0, "Stage": None, "Detail": None, "RunStartDate": None,
                  "EstimatedCompletion": None, "RecordsAffected": 0, "Queries": None, "Jobs": None}
        if run is None:
            return status
        finished = run["Status"] in runs.FINISHED
        progress = _progress(active, tasks, finished, transformation)
        status.update(RunStartDate=run["RunStartDate"], Detail=run["Details"] or run["Status"],
                      RecordsAffected=sum(t["RecordsAffected"] or 0 for t in tasks), Progress=progress,
                      Stage=("finished" if finished else active.stage if active else run["Status"].lower()))
        if active is not None and not finished and progress > 0:
            elapsed = time.monotonic() - active.started
            status["EstimatedCompletion"] = utcnow() + dt.timedelta(seconds=elapsed * (100 - progress) / progress)
        if push:
            status["Queries"] = [_query_status(t, active, finished) for t in tasks]
        return status

    # ---- GetJobLog -----------------------------------------------------------------------------------------
    async def get_job_log(self, call: ActionCall) -> list[dict]:
        job_name, _ = await self._target(call)
        history = self.store.table("History")
        columns = [history.c[n] for n in ("Id", "RunId", "JobName", "Status", "RunStartDate")]
        query = sa.select(*columns).where(history.c.JobName == job_name)
        if call.params.get("RunId"):
            query = query.where(history.c.RunId == call.params["RunId"])
        else:
            days = call.params.get("Days") or 1
            query = query.where(history.c.RunStartDate >= utcnow() - dt.timedelta(days=days))
        async with self.store.engine.connect() as conn:
            found = [dict(r) for r in (await conn.execute(query.order_by(history.c.Id.desc()))).mappings().all()]
        if not found and call.params.get("RunId"):
            raise NotFound(f"Job '{job_name}' has no run {call.params['RunId']}")
        return [{"JobName": job_name, "RunId": run["RunId"], "Log": await self.executor.runlog.text(run)}
                for run in found]


async def _transformation_named(store: Store, name: str | None, given_id: str | None) -> str | None:
    """The transformation a call names by JobName or JobId, when no job has that name or id (jobs win a tie)."""
    if not name and not given_id:
        return None
    jobs, transformations = store.table("Jobs"), store.table("Transformations")
    if name:
        job_match, match = jobs.c.JobName == name, transformations.c.TransformationName == name
    else:
        given = str(given_id).lower()
        job_match, match = jobs.c.JobId == given, transformations.c.TransformationId == given
    async with store.read() as session:
        if await session.fetch(sa.select(jobs.c.JobName).where(job_match)):
            return None
        found = await session.fetch(sa.select(transformations.c.TransformationName).where(match))
    return found[0][0] if found else None


def _progress(active: ActiveRun | None, tasks: list[dict], finished: bool, transformation: bool) -> int:
    """0-100: a job's rows done over its estimate; a transformation's queries done over its queries."""
    if finished:
        return 100
    if transformation:
        done = sum(1 for t in tasks if t["Status"] in runs.FINISHED)
        return min(99, 100 * done // len(tasks)) if tasks else 0
    return active.progress if active else 0


def _detail(task: dict) -> str:
    if task["Status"] in ("QUEUED", "RUNNING"):
        return task["Status"].capitalize()
    return f"{task['RecordsAffected'] or 0} records affected"


def _query_status(task: dict, active: ActiveRun | None, finished: bool) -> dict:
    live = active.tasks.get(task["TaskId"]) if active else None
    progress = 100 if task["Status"] in runs.FINISHED or finished else 0
    if live is not None and live.estimated and task["Status"] == "RUNNING":
        progress = min(99, int(100 * live.rows_done / live.estimated))
    return {"TaskId": task["TaskId"], "Query": task["Query"], "Status": task["Status"], "Progress": progress,
            "Detail": task["Details"] or _detail(task), "Result": task["Details"] if task["Status"] == "FAILED"
            else None, "RecordsAffected": live.affected if live and not finished else task["RecordsAffected"] or 0}

