"""The run queue in the store. A run is a History row (with one TaskHistory row per task): QUEUED rows are claimed
by a worker, which holds a lease while it runs them; a server that starts fails the runs whose lease expired."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from odata_sync.errors import BadRequest, Conflict, NotFound
from odata_sync.service.common import BUSY, touch
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow

LEASE = dt.timedelta(seconds=30)
FINISHED = ("SUCCESS", "FAILED", "CANCELLED")


def owner(store: Store, transformation: bool) -> tuple[sa.Table, sa.Column]:
    """The row whose Status/LastRun a run updates: its job, or its transformation."""
    if transformation:
        table = store.table("Transformations")
        return table, table.c.TransformationName
    table = store.table("Jobs")
    return table, table.c.JobName


def _normalise(query: str) -> str:
    return " ".join(query.split()).lower()


async def job_name_of(store: Store, job_name: str | None, job_id: str | None) -> str:
    """The job a call names, by JobName or JobId (404 when there is none)."""
    if not job_name and not job_id:
        raise BadRequest("Name the job: JobName or JobId")
    jobs = store.table("Jobs")
    where = jobs.c.JobName == job_name if job_name else jobs.c.JobId == str(job_id).lower()
    async with store.read() as session:
        rows = await session.fetch(sa.select(jobs.c.JobName).where(where))
    if not rows:
        raise NotFound(f"Job '{job_name or job_id}' does not exist")
    return rows[0][0]


async def enqueue(store: Store, job_name: str, *, triggered_by: str, user: str | None, force_full: bool = False,
                  queries: list[str] | None = None, attempt: int = 0,
                  not_before: dt.datetime | None = None, transformation: bool = False,
                  conn: AsyncConnection | None = None) -> tuple[int, str]:
    """Queue a run of the job (all its tasks, or those whose Query matches one of ``queries``) or of the
    transformation (its Queries, in order): (History Id, RunId). One already queued or running is a Conflict,
    and then nothing is written. Inside ``conn``'s transaction when given (the scheduler queues a run and consumes
    its tick in one commit)."""
    tasks = store.table("Tasks")
    history, task_history = store.table("History"), store.table("TaskHistory")
    table, name_column = owner(store, transformation)
    what = "Transformation" if transformation else "Job"
    async with _within(store, conn) as conn:
        id_column = table.c.TransformationId if transformation else table.c.JobId
        extra = [table.c.Queries] if transformation else []
        query = sa.select(table.c.Status, id_column.label("Id"), *extra).where(name_column == job_name)
        if store.dialect == "postgresql":
            query = query.with_for_update()
        job = (await conn.execute(query)).first()
        if job is None:
            raise NotFound(f"{what} '{job_name}' does not exist")
        if job.Status in BUSY:
            raise Conflict(f"{what} '{job_name}' is already {job.Status.lower()}")
        if transformation:
            rows = [_Step(i, q) for i, q in enumerate(job.Queries or [], start=1)]
        else:
            rows = (await conn.execute(sa.select(tasks.c.TaskId, tasks.c.Query, tasks.c.Table)
                                       .where(tasks.c.JobName == job_name).order_by(tasks.c.Index))).all()
        if queries is not None:
            wanted = {_normalise(q): q for q in queries}
            rows = [r for r in rows if _normalise(r.Query) in wanted]
            missing = set(wanted) - {_normalise(r.Query) for r in rows}
            if missing:
                raise BadRequest(f"Job '{job_name}' has no task with the query '{wanted[missing.pop()]}'",
                                 target="Query")
        if not rows:
            raise BadRequest(f"{what} '{job_name}' has nothing to run")
        now = utcnow()
        run_id = str(uuid.uuid4())
        result = await conn.execute(history.insert().values(
            RunId=run_id, JobName=job_name, JobId=job.Id, RunStartDate=now, Status="QUEUED",
            TriggeredBy=triggered_by, User=user, RecordsAffected=0, _NotBefore=not_before,
            _Options={"force_full": force_full, "task_ids": [r.TaskId for r in rows], "attempt": attempt,
                      "queries": queries, "transformation": transformation}))
        history_id = result.inserted_primary_key[0]
        await conn.execute(task_history.insert(), [
            {"RunId": run_id, "HistoryId": history_id, "JobName": job_name, "TaskId": r.TaskId, "Query": r.Query,
             "Table": r.Table, "Status": "QUEUED", "RecordsAffected": 0} for r in rows])
        await touch(conn, table, name_column == job_name, now, Status="QUEUED")
    return history_id, run_id


@contextlib.asynccontextmanager
async def _within(store: Store, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
    """``conn`` when the caller has a transaction open, else a write transaction of our own."""
    if conn is not None:
        yield conn
        return
    async with store.write() as own:
        yield own


@dataclass(frozen=True)
class _Step:
    """A transformation's query, in the shape of a task row."""

    TaskId: int
    Query: str
    Table: str | None = None


CLAIM_LOCK = 0x6F64_7363  # pg_advisory_xact_lock id ("odsc"): one claim at a time across the cluster
CLAIM_PAGE = 100  # queued runs examined per query while looking for one whose connections are free
ACTIVE = ("RUNNING", "CANCELLING")


async def claim(store: Store, worker: str, per_connection: int | None = None) -> dict | None:
    """Take the oldest QUEUED run whose connections have fewer than ``per_connection`` runs going anywhere in the
    cluster (None or 0: no limit). Claims are serialised (a transaction-level advisory lock on PostgreSQL, the write
    lock on SQLite), so two nodes cannot both see a connection free and both start a run on it."""
    limited = bool(per_connection and per_connection > 0)
    async with store.write() as conn:
        if store.dialect == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
        now = utcnow()  # after the lock: a run that ended before this claim ended before this start
        busy: set[str] | None = None
        last = 0
        while True:
            page = await _queued_page(conn, store, now, after=last)
            if limited and page and busy is None:
                busy = await _busy_connections(conn, store, per_connection or 0)
            uses = await _connections_of(conn, store, page) if busy else {}
            for row in page:
                if busy and busy & uses[row["Id"]]:
                    continue
                if await _take(conn, store, row, worker, now):
                    return dict(row)
            if len(page) < CLAIM_PAGE:
                return None
            last = page[-1]["Id"]


async def _take(conn, store: Store, row, worker: str, now: dt.datetime) -> bool:
    """Mark the run RUNNING for ``worker`` (False when it was cancelled meanwhile) and its job or transformation too."""
    history = store.table("History")
    taken = await conn.execute(sa.update(history).where(history.c.Id == row["Id"], history.c.Status == "QUEUED")
                               .values(Status="RUNNING", RunStartDate=now, _Owner=worker, _Lease=now + LEASE))
    if taken.rowcount != 1:
        return False
    table, name_column = owner(store, _is_transformation(row))
    await touch(conn, table, name_column == row["JobName"], now, Status="RUNNING")
    return True


def _is_transformation(row) -> bool:
    return bool((row["_Options"] or {}).get("transformation"))


async def _queued_page(conn, store: Store, now: dt.datetime, after: int) -> list:
    """Up to CLAIM_PAGE runs a worker may start now, oldest first after Id ``after`` (locked on PostgreSQL,
    skipping rows another transaction holds)."""
    history = store.table("History")
    query = sa.select(history.c.Id, history.c.RunId, history.c.JobName, history.c.TriggeredBy, history.c.User,
                      history.c._Options).where(
        history.c.Status == "QUEUED", history.c.Id > after,
        sa.or_(history.c._NotBefore.is_(None), history.c._NotBefore <= now)
    ).order_by(history.c.Id).limit(CLAIM_PAGE)
    if store.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list((await conn.execute(query)).mappings().all())


async def _connections_of(conn, store: Store, rows) -> dict[int, set[str]]:
    """History Id -> the connections its run uses: a job's Source and Destination, a transformation's Connection."""
    jobs, transformations = store.table("Jobs"), store.table("Transformations")
    job_names = {r["JobName"] for r in rows if not _is_transformation(r)}
    step_names = {r["JobName"] for r in rows if _is_transformation(r)}
    found: dict[tuple[bool, str], set[str]] = {}
    if job_names:
        for name, source, destination in (await conn.execute(sa.select(
                jobs.c.JobName, jobs.c.Source, jobs.c.Destination).where(jobs.c.JobName.in_(job_names)))).all():
            found[False, name] = {source, destination}
    if step_names:
        for name, connection in (await conn.execute(sa.select(
                transformations.c.TransformationName, transformations.c.Connection).where(
                transformations.c.TransformationName.in_(step_names)))).all():
            found[True, name] = {connection}
    return {r["Id"]: found.get((_is_transformation(r), r["JobName"]), set()) for r in rows}


async def _busy_connections(conn, store: Store, per_connection: int) -> set[str]:
    """The connections that already have ``per_connection`` runs going, on any node (counted from the store)."""
    history = store.table("History")
    running = (await conn.execute(sa.select(history.c.Id, history.c.JobName, history.c._Options).where(
        history.c.Status.in_(ACTIVE)))).mappings().all()
    counts: dict[str, int] = {}
    for used in (await _connections_of(conn, store, running)).values():
        for name in used:
            counts[name] = counts.get(name, 0) + 1
    return {name for name, count in counts.items() if count >= per_connection}


async def renew(store: Store, owner: str, history_ids: list[int]) -> set[str]:
    """Extend this worker's leases; return the jobs someone asked to cancel (Jobs.Status CANCELLING)."""
    if not history_ids:
        return set()
    history, jobs = store.table("History"), store.table("Jobs")
    async with store.write() as conn:
        await conn.execute(sa.update(history).where(history.c.Id.in_(history_ids), history.c._Owner == owner)
                           .values(_Lease=utcnow() + LEASE))
        names = (await conn.execute(sa.select(history.c.JobName).where(history.c.Id.in_(history_ids)))).scalars().all()
        cancelling = await conn.execute(sa.select(jobs.c.JobName).where(jobs.c.JobName.in_(names),
                                                                        jobs.c.Status == "CANCELLING"))
        return set(cancelling.scalars().all())


def _dead_here(owner: str | None, host: str) -> bool:
    """A run owned by a process of this machine that no longer exists (its lease may not have expired yet)."""
    if not owner or not owner.startswith(host + ":"):
        return False
    pid = owner[len(host) + 1:]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def fail_interrupted(store: Store, host: str | None = None, backoff: dt.timedelta | None = None) -> int:
    """Runs left RUNNING by a process that died become FAILED (their jobs IDLE again): those whose lease expired,
    and at once those owned by a process of this machine that is gone."""
    history, task_history = store.table("History"), store.table("TaskHistory")
    now = utcnow()
    async with store.write() as conn:
        running = (await conn.execute(sa.select(history.c.Id, history.c.JobName, history.c._Options,
                                                history.c._Lease, history.c._Owner).where(
            history.c.Status.in_(("RUNNING", "CANCELLING"))))).all()
        rows = [r for r in running if r._Lease is None or r._Lease < now or (host and _dead_here(r._Owner, host))]
        for row in rows:
            await finish_run(conn, store, row.Id, row.JobName, "FAILED",
                             "interrupted: the server running it stopped before it ended", now,
                             transformation=bool((row._Options or {}).get("transformation")))
            await conn.execute(sa.update(task_history).where(
                task_history.c.HistoryId == row.Id, task_history.c.Status.in_(("QUEUED", "RUNNING"))).values(
                Status="FAILED", Details="interrupted", RunEndDate=now))
        if not rows:
            return 0
        # a job whose last run ended but which still reads busy (a crash between the two writes)
        stale = sa.select(history.c.JobName).where(history.c.Status.in_(("QUEUED", "RUNNING")))
        for flag in (False, True):
            table, name_column = owner(store, flag)
            await conn.execute(sa.update(table).where(table.c.Status.in_(BUSY), name_column.not_in(stale))
                               .values(Status="IDLE", Modified=now))
    for row in rows:  # AutomaticJobRetry: an interrupted run is queued again
        await retry_if_wanted(store, row.JobName, row._Options or {}, backoff)
    return len(rows)


RETRIES = 3
RETRY_BACKOFF = dt.timedelta(seconds=30)  # doubled for each further attempt


async def retry_if_wanted(store: Store, job_name: str, options: dict, backoff: dt.timedelta | None = None) -> bool:
    """Queue a retry of a failed run when the job has AutomaticJobRetry and attempts are left (exponential backoff)."""
    if options.get("transformation"):
        return False
    jobs = store.table("Jobs")
    async with store.read() as session:
        found = await session.fetch(sa.select(jobs.c.AutomaticJobRetry).where(jobs.c.JobName == job_name))
    attempt = int(options.get("attempt") or 0) + 1
    if not found or not found[0][0] or attempt > RETRIES:
        return False
    delay = (backoff or RETRY_BACKOFF) * (2 ** (attempt - 1))
    try:
        await enqueue(store, job_name, triggered_by="retry", user=None, force_full=bool(options.get("force_full")),
                      queries=options.get("queries"), attempt=attempt, not_before=utcnow() + delay)
    except (Conflict, BadRequest, NotFound):
        return False  # queued again by someone else meanwhile, or the job changed: nothing to retry
    return True


async def queue_after_job(store: Store, job_name: str) -> int:
    """Queue the transformations triggered AfterJob by this job (after its SUCCESS)."""
    table = store.table("Transformations")
    async with store.read() as session:
        names = [r[0] for r in await session.fetch(sa.select(table.c.TransformationName).where(
            table.c.TransformationTriggerMode == "AfterJob", table.c.TriggerAfterJob == job_name))]
    queued = 0
    for name in names:
        try:
            await enqueue(store, name, triggered_by="afterjob", user=None, transformation=True)
            queued += 1
        except (Conflict, BadRequest, NotFound):
            continue  # already queued or running, or changed meanwhile
    return queued


async def finish_run(conn, store: Store, history_id: int, job_name: str, status: str, details: str | None,
                     now: dt.datetime, counts: dict | None = None, sync_type: str | None = None,
                     transformation: bool = False) -> None:
    history = store.table("History")
    table, name_column = owner(store, transformation)
    started = (await conn.execute(sa.select(history.c.RunStartDate).where(history.c.Id == history_id))).scalar()
    runtime = int((now - started).total_seconds() * 1000) if started else None
    await conn.execute(sa.update(history).where(history.c.Id == history_id).values(
        Status=status, Details=details, RunEndDate=now, Runtime=runtime, _Lease=None, SyncType=sync_type,
        **(counts or {})))
    await touch(conn, table, name_column == job_name, now, Status="IDLE", LastRun=now, LastRunStatus=status)


async def cancel_queued(store: Store, job_name: str, transformation: bool = False) -> str | None:
    """Cancel the job's (or transformation's) QUEUED run at once (its RunId), or mark a RUNNING one CANCELLING for
    its worker (None)."""
    history, task_history = store.table("History"), store.table("TaskHistory")
    table, name_column = owner(store, transformation)
    async with store.write() as conn:
        row = (await conn.execute(sa.select(history.c.Id, history.c.RunId, history.c.Status).where(
            history.c.JobName == job_name, history.c.Status.in_(("QUEUED", "RUNNING")))
            .order_by(history.c.Id.desc()).limit(1))).first()
        if row is None:
            raise Conflict(f"'{job_name}' is not queued or running")
        now = utcnow()
        if row.Status == "QUEUED":
            await finish_run(conn, store, row.Id, job_name, "CANCELLED", "cancelled before it started", now,
                             transformation=transformation)
            await conn.execute(sa.update(task_history).where(task_history.c.HistoryId == row.Id).values(
                Status="CANCELLED", RunEndDate=now))
            return row.RunId
        await touch(conn, table, name_column == job_name, now, Status="CANCELLING")
        return None


async def latest_run(store: Store, job_name: str) -> dict | None:
    history = store.table("History")
    columns = [history.c[name] for name in ("Id", "RunId", "JobName", "JobId", "Status", "RunStartDate", "RunEndDate",
                                            "Details", "RecordsAffected", "_Owner")]
    async with store.engine.connect() as conn:
        row = (await conn.execute(sa.select(*columns).where(history.c.JobName == job_name)
                                  .order_by(history.c.Id.desc()).limit(1))).mappings().first()
    return dict(row) if row else None


async def task_rows(store: Store, history_id: int) -> list[dict]:
    task_history = store.table("TaskHistory")
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(task_history).where(task_history.c.HistoryId == history_id)
                                   .order_by(task_history.c.Id))).mappings().all()
    return [dict(r) for r in rows]
