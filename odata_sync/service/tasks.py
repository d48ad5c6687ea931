"""Tasks: the job must exist, Query from Table, and Index kept dense and ordered (inserting shifts later tasks)."""

from __future__ import annotations

import sqlalchemy as sa

from odata_sync.errors import BadRequest
from odata_sync.odata.hooks import EntityHooks, WriteContext
from odata_sync.replication.statement import parse_replicate
from odata_sync.service import common


def query_for_table(table: str) -> str:
    return f"REPLICATE [{table.replace(']', ']]')}]"


async def _max_index(tx: WriteContext, job_name: str) -> int:
    tasks = tx.tables("Tasks")
    query = sa.select(sa.func.coalesce(sa.func.max(tasks.c.Index), 0)).where(tasks.c.JobName == job_name)
    return (await tx.conn.execute(query)).scalar_one()


async def _shift(tx: WriteContext, job_name: str, from_index: int, by: int = 1) -> None:
    """Make room at ``from_index``: later tasks move down by ``by``."""
    tasks = tx.tables("Tasks")
    await common.touch(tx.conn, tasks, sa.and_(tasks.c.JobName == job_name, tasks.c.Index >= from_index), tx.now,
                       Index=tasks.c.Index + by)


async def _index_taken(tx: WriteContext, job_name: str, index: int) -> bool:
    tasks = tx.tables("Tasks")
    query = sa.select(sa.literal(1)).where(tasks.c.JobName == job_name, tasks.c.Index == index).limit(1)
    return (await tx.conn.execute(query)).first() is not None


def _complete(values: dict, creating: bool, what: str = "Query") -> None:
    """Query from Table, or Table from a plain ``REPLICATE [T]``; the query is parsed now, so a malformed one is
    refused when written (400 naming the position), not when the job runs."""
    query, table = values.get("Query"), values.get("Table")
    if query is not None and not query.strip():
        raise BadRequest(f"{what} must not be empty", target=what)
    if query is None and table:
        values["Query"] = query_for_table(table)
    elif query is not None:
        try:
            statement = parse_replicate(query)
        except BadRequest as exc:
            raise BadRequest(f"{what}: {exc.message}", target=what) from exc
        if not table and statement.select is None:
            values["Table"] = statement.target.name
    elif creating and query is None:
        raise BadRequest("A task needs a Query or a Table", target="Query")
    if values.get("Index") is not None and values["Index"] < 1:
        raise BadRequest("Index starts at 1", target="Index")


async def insert_tasks(tx: WriteContext, job_name: str, rows: list[dict]) -> None:
    """Append tasks to a job (used by Job POST with Query#N)."""
    start = await _max_index(tx, job_name)
    tasks = tx.tables("Tasks")
    payload = []
    for offset, row in enumerate(rows, start=1):
        values = {"JobName": job_name, "Index": start + offset, "Query": row.get("Query"), "Table": row.get("Table")}
        _complete(values, creating=True, what=f"Query#{offset}")
        common.stamp_create(tx, values)
        payload.append(values)
    await tx.conn.execute(sa.insert(tasks), payload)


class TaskHooks(EntityHooks):
    alternate_collection_key = "JobName"

    async def before_create(self, tx: WriteContext, values: dict) -> None:
        common.unexpected_extras(tx)
        status = await common.job_status(tx, values["JobName"], lock=True)
        if status is None:
            raise BadRequest(f"Job '{values['JobName']}' does not exist", target="JobName")
        await common.refuse_if_running(tx, values["JobName"], "get new tasks")
        _complete(values, creating=True)
        if values.get("Index") is None:
            values["Index"] = await _max_index(tx, values["JobName"]) + 1
        elif await _index_taken(tx, values["JobName"], values["Index"]):
            await _shift(tx, values["JobName"], values["Index"])
        common.stamp_create(tx, values)

    async def before_update(self, tx: WriteContext, old: dict, changes: dict) -> None:
        common.unexpected_extras(tx)
        await common.job_status(tx, old["JobName"], lock=True)
        await common.refuse_if_running(tx, old["JobName"], "have its tasks changed")
        job_name = changes.get("JobName", old["JobName"])
        if job_name != old["JobName"]:
            if await common.job_status(tx, job_name) is None:
                raise BadRequest(f"Job '{job_name}' does not exist", target="JobName")
            await common.refuse_if_running(tx, job_name, "get new tasks")
            if "Index" not in changes:
                changes["Index"] = await _max_index(tx, job_name) + 1
        if "Table" in changes and "Query" not in changes and changes["Table"]:
            changes["Query"] = query_for_table(changes["Table"])
        _complete(changes, creating=False)
        new_index = changes.get("Index")
        moved = new_index is not None and (new_index != old["Index"] or job_name != old["JobName"])
        if moved and await _index_taken(tx, job_name, new_index):
            await _shift(tx, job_name, new_index)
        common.stamp_update(tx, old, changes)

    async def before_delete(self, tx: WriteContext, old: dict) -> None:
        await common.refuse_if_running(tx, old["JobName"], "have its tasks deleted")
