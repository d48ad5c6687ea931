"""Cron schedules: a job whose NextRun has come is queued (TriggeredBy ``schedule``) and its NextRun moves to the
next tick after now, so a run missed while the server was down runs once at start, not once per missed tick.
A job still running when its tick comes is not started twice: the skip is written to its run's log.
With a PostgreSQL store one node schedules at a time (an advisory lock); SQLite has one node."""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa

from odata_sync.errors import BadRequest, Conflict, NotFound
from odata_sync.executor import runs
from odata_sync.service.common import BUSY, next_run, touch
from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow

log = logging.getLogger(__name__)
LEADER_LOCK = 0x6F64_7379  # pg_advisory lock id: "odsy"


class Scheduler:
    def __init__(self, store: Store, executor, *, every: float = 15.0, keep_log_days: int = 30) -> None:
        self.store = store
        self.executor = executor
        self.every = every
        self.keep_log_days = keep_log_days
        self._leader_conn = None
        self._next_prune = 0.0

    async def run(self) -> None:
        try:
            while True:
                try:
                    if await self._is_leader():
                        await self.tick()
                        if self.keep_log_days and time.monotonic() >= self._next_prune:
                            self._next_prune = time.monotonic() + 3600
                            await self.executor.runlog.prune(self.keep_log_days)
                except Exception:  # one bad tick must not end scheduling
                    log.exception("the scheduler's tick failed")
                await asyncio.sleep(self.every)
        finally:
            if self._leader_conn is not None:
                await self._leader_conn.close()

    async def _is_leader(self) -> bool:
        if self.store.dialect != "postgresql":
            return True
        if self._leader_conn is None:
            self._leader_conn = await self.store.engine.connect()
        got = (await self._leader_conn.execute(sa.text(f"SELECT pg_try_advisory_lock({LEADER_LOCK})"))).scalar()
        await self._leader_conn.commit()
        return bool(got)

    async def tick(self) -> int:
        """Queue every scheduled job that is due; return how many were queued."""
        jobs = self.store.table("Jobs")
        now = utcnow()
        async with self.store.engine.connect() as conn:
            due = (await conn.execute(sa.select(jobs.c.JobName, jobs.c.ScheduledCron, jobs.c.Status).where(
                jobs.c.Scheduled.is_(True), jobs.c.NextRun.is_not(None), jobs.c.NextRun <= now))).all()
        queued = 0
        for job in due:
            if job.Status in BUSY:
                await self._skip(job.JobName)
            else:
                try:
                    await runs.enqueue(self.store, job.JobName, triggered_by="schedule", user=None)
                    queued += 1
                except (Conflict, BadRequest, NotFound) as exc:
                    log.warning("scheduled run of %s not queued: %s", job.JobName, exc)
            async with self.store.write() as conn:
                await touch(conn, jobs, jobs.c.JobName == job.JobName, utcnow(),
                            NextRun=next_run(job.ScheduledCron, now) if job.ScheduledCron else None)
        queued += await self._transformations(now)
        if queued:
            self.executor.wake()
        return queued

    async def _transformations(self, now) -> int:
        """Scheduled transformations are due when the next tick after their last run (or creation) has come."""
        table = self.store.table("Transformations")
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(table.c.TransformationName, table.c.ScheduledCron, table.c.LastRun,
                                                 table.c.Created, table.c.Status).where(
                table.c.TransformationTriggerMode == "Scheduled", table.c.ScheduledCron.is_not(None)))).all()
        queued = 0
        for row in rows:
            if row.Status in BUSY or next_run(row.ScheduledCron, row.LastRun or row.Created) > now:
                continue
            try:
                await runs.enqueue(self.store, row.TransformationName, triggered_by="schedule", user=None,
                                   transformation=True)
                queued += 1
            except (Conflict, BadRequest, NotFound) as exc:
                log.warning("scheduled transformation %s not queued: %s", row.TransformationName, exc)
        return queued

    async def _skip(self, job_name: str) -> None:
        run = await runs.latest_run(self.store, job_name)
        if run is not None:
            await self.executor.runlog.write(run["Id"], 2, 4, "a scheduled run was skipped: this run was still "
                                             "going when the next one was due")
