"""Cron schedules: a job whose NextRun has come is queued (TriggeredBy ``schedule``) and its NextRun moves to the
next tick after now, so a run missed while the server was down runs once at start, not once per missed tick.
A job still running when its tick comes is not started twice: the skip is written to its run's log.
With a PostgreSQL store one node schedules at a time: the holder of a session advisory lock, which PostgreSQL
releases when that node's connection ends, so another node takes over at its next round. A tick is also consumed
by a compare-and-set on NextRun in the same commit as its run, so even two nodes that both believe they lead (for
the moment a dead connection goes unnoticed) queue one run per tick. SQLite has one node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

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
        self.leader = False  # this node schedules (as of its last round)
        self.rounds = 0  # rounds done, leading or not: lets a caller wait for the scheduler to have looked
        self._leader_conn: AsyncConnection | None = None
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
                self.rounds += 1
                await asyncio.sleep(self.every)
        finally:
            await self._resign()

    async def _is_leader(self) -> bool:
        """Hold the leader lock on a connection of our own: take it when free; once held, the connection being
        alive is proof enough (only closing it releases the lock). A broken connection loses the lead."""
        if self.store.dialect != "postgresql":
            self.leader = True
            return True
        try:
            if self._leader_conn is None:
                self._leader_conn = await self.store.engine.connect()
            sql = "SELECT 1" if self.leader else f"SELECT pg_try_advisory_lock({LEADER_LOCK})"
            held = bool((await self._leader_conn.execute(sa.text(sql))).scalar())
            await self._leader_conn.commit()
        except (sa.exc.DBAPIError, OSError):
            log.warning("the scheduler lost its store connection; another node may lead now", exc_info=True)
            await self._resign()
            return False
        if held and not self.leader:
            log.info("this node now runs the schedules")
        self.leader = held
        return held

    async def _resign(self) -> None:
        """Give the lead up: the connection is discarded, not pooled, so its session lock ends with it."""
        conn, self._leader_conn, self.leader = self._leader_conn, None, False
        if conn is None:
            return
        with contextlib.suppress(sa.exc.DBAPIError, OSError):
            await conn.invalidate()
        with contextlib.suppress(sa.exc.DBAPIError, OSError):
            await conn.close()

    async def tick(self) -> int:
        """Queue every scheduled job that is due; return how many were queued."""
        jobs = self.store.table("Jobs")
        now = utcnow()
        async with self.store.engine.connect() as conn:
            due = (await conn.execute(sa.select(jobs.c.JobName, jobs.c.ScheduledCron, jobs.c.Status, jobs.c.NextRun)
                                      .where(jobs.c.Scheduled.is_(True), jobs.c.NextRun.is_not(None),
                                             jobs.c.NextRun <= now))).all()
        queued = 0
        for job in due:
            outcome = await self._fire(job, next_run(job.ScheduledCron, now) if job.ScheduledCron else None)
            if outcome == "busy":
                await self._skip(job.JobName)
            queued += outcome == "queued"
        queued += await self._transformations(now)
        if queued:
            self.executor.wake()
        return queued

    async def _fire(self, job, upcoming) -> str:
        """Consume the job's tick (NextRun moves on only if no one else moved it) and queue its run, in one commit:
        ``queued``, ``busy`` (still running: skipped), ``taken`` (another scheduler had it) or ``refused``."""
        jobs = self.store.table("Jobs")
        async with self.store.write() as conn:
            moved = await conn.execute(sa.update(jobs).where(jobs.c.JobName == job.JobName,
                                                             jobs.c.NextRun == job.NextRun).values(NextRun=upcoming))
            if moved.rowcount != 1:
                return "taken"
            await touch(conn, jobs, jobs.c.JobName == job.JobName, utcnow())
            if job.Status in BUSY:
                return "busy"
            try:
                await runs.enqueue(self.store, job.JobName, triggered_by="schedule", user=None, conn=conn)
            except Conflict:
                return "busy"
            except (BadRequest, NotFound) as exc:
                log.warning("scheduled run of %s not queued: %s", job.JobName, exc)
                return "refused"
        return "queued"

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
