"""Jobs: validation of settings, Query#N tasks on create, and the rules around running jobs."""

from __future__ import annotations

import sqlalchemy as sa

from odata_sync.errors import BadRequest, Conflict
from odata_sync.odata.body import ordered
from odata_sync.odata.hooks import EntityHooks, WriteContext
from odata_sync.service import common
from odata_sync.service.tasks import insert_tasks

INTERVAL_UNITS = ("minutes", "hours", "days", "weeks", "months", "years")


def _validate(values: dict) -> None:
    if "Type" in values and values["Type"] is not None:
        if str(values["Type"]).strip().lower() in ("1", "standard"):
            values["Type"] = "Standard"
        else:
            raise BadRequest("Type must be Standard (or 1)", target="Type")
    common.check_cron(values.get("ScheduledCron"))
    common.check_range(values, "Verbosity", 1, 4)
    common.check_range(values, "BatchSize", 1)
    common.check_range(values, "CommandTimeout", 0)
    common.check_range(values, "ReplicateInterval", 1)
    common.check_choice(values, "ReplicateIntervalUnit", INTERVAL_UNITS)
    for hook in ("PreJob", "PostJob"):
        url = values.get(hook)
        if url and not url.lower().startswith(("http://", "https://")):
            raise BadRequest(f"{hook} must be an http(s) URL that receives a JSON POST", target=hook)


def _schedule(tx: WriteContext, row: dict, changes: dict) -> None:
    if row.get("Scheduled") and not row.get("ScheduledCron"):
        raise BadRequest("A scheduled job needs ScheduledCron", target="ScheduledCron")
    changes["NextRun"] = common.next_run(row["ScheduledCron"], tx.now) if row.get("Scheduled") else None


class JobHooks(EntityHooks):
    array_members = frozenset({"Query"})
    lenient_strings = frozenset({"Type"})

    async def before_create(self, tx: WriteContext, values: dict) -> None:
        common.unexpected_extras(tx, ("Query",))
        common.check_name(values["JobName"], "JobName")
        _validate(values)
        await common.require_connection(tx, values.get("Source"), "Source")
        await common.require_connection(tx, values.get("Destination"), "Destination")
        values["JobId"] = common.new_id()
        _schedule(tx, values, values)
        common.stamp_create(tx, values)
        for index, query in enumerate(ordered(tx.extras.get("Query", {})), start=1):
            if not isinstance(query, str) or not query.strip():
                raise BadRequest(f"Query#{index} must be a non-empty string", target=f"Query#{index}")

    async def after_create(self, tx: WriteContext, values: dict) -> None:
        queries = ordered(tx.extras.get("Query", {}))
        if queries:
            await insert_tasks(tx, values["JobName"], [{"Query": q} for q in queries])

    async def before_update(self, tx: WriteContext, old: dict, changes: dict) -> None:
        common.unexpected_extras(tx)
        if old["Status"] in common.BUSY:
            raise Conflict(f"Job '{old['JobName']}' is running; it cannot be modified until the run ends")
        _validate(changes)
        for name in ("Source", "Destination"):
            if name in changes:
                await common.require_connection(tx, changes[name], name)
        if {"Scheduled", "ScheduledCron"} & changes.keys():
            _schedule(tx, {**old, **changes}, changes)
        common.stamp_update(tx, old, changes)

    async def before_delete(self, tx: WriteContext, old: dict) -> None:
        if old["Status"] in common.BUSY:
            raise Conflict(f"Job '{old['JobName']}' is running; it cannot be deleted until the run ends")
        tasks = tx.tables("Tasks")
        await tx.conn.execute(sa.delete(tasks).where(tasks.c.JobName == old["JobName"]))
