"""The run log behind GetJobLog: lines kept in the store at the job's Verbosity, bounded per run and pruned by age."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from odata_sync.store.engine import Store
from odata_sync.store.types import utcnow

LEVELS = {1: "ERROR", 2: "INFO", 3: "TRANSFER", 4: "VERBOSE"}
MAX_LINES_PER_RUN = 20_000


class RunLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts: dict[int, int] = {}

    async def write(self, history_id: int, level: int, verbosity: int, message: str, conn=None) -> None:
        """Keep the line when the job's Verbosity shows its level (1 Error … 4 Verbose); in ``conn``'s transaction
        when given (so a batch's progress and its log line cost one store write)."""
        if level > verbosity:
            return
        count = self._counts.get(history_id, 0)
        if count > MAX_LINES_PER_RUN:
            return
        if count == MAX_LINES_PER_RUN:
            message, level = f"(more than {MAX_LINES_PER_RUN} lines: the rest of this run's log is dropped)", 1
        self._counts[history_id] = count + 1
        insert = self.store.metadata.tables["run_log"].insert().values(
            HistoryId=history_id, Timestamp=utcnow(), Level=level, Message=message[:4000])
        if conn is not None:
            await conn.execute(insert)
            return
        async with self.store.write() as own:
            await own.execute(insert)

    def forget(self, history_id: int) -> None:
        """The run ended: drop its line count."""
        self._counts.pop(history_id, None)

    async def text(self, run: dict) -> str:
        """The log of one run: a header naming the job, the run, its start and status, then one line per event."""
        table = self.store.metadata.tables["run_log"]
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(table.c.Timestamp, table.c.Level, table.c.Message)
                                       .where(table.c.HistoryId == run["Id"]).order_by(table.c.Id))).all()
        started = run["RunStartDate"].isoformat().replace("+00:00", "Z") if run["RunStartDate"] else "-"
        header = f"Job: {run['JobName']}\nRunId: {run['RunId']}\nStarted: {started}\nStatus: {run['Status']}\n"
        lines = [f"{r.Timestamp.isoformat().replace('+00:00', 'Z')} {LEVELS.get(r.Level, r.Level)} {r.Message}"
                 for r in rows]
        return header + "\n".join(lines) + ("\n" if lines else "")

    async def prune(self, days: int) -> None:
        table = self.store.metadata.tables["run_log"]
        async with self.store.write() as conn:
            await conn.execute(table.delete().where(table.c.Timestamp < utcnow() - dt.timedelta(days=days)))
