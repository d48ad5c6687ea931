"""Transformations: SQL run in a destination connection, triggered after a job, on a schedule, or on demand."""

from __future__ import annotations

from odata_sync.errors import BadRequest, Conflict
from odata_sync.odata.body import ordered
from odata_sync.odata.hooks import EntityHooks, WriteContext
from odata_sync.service import common

TRIGGER_MODES = ("None", "Scheduled", "AfterJob")


async def _validate(tx: WriteContext, row: dict, changes: dict) -> None:
    common.check_choice(changes, "TransformationTriggerMode", TRIGGER_MODES)
    row = {**row, **changes}
    common.check_cron(row.get("ScheduledCron"))
    common.check_range(changes, "Verbosity", 1, 4)
    common.check_range(changes, "CommandTimeout", 0)
    if "Connection" in changes:
        await common.require_connection(tx, changes["Connection"], "Connection")
    mode = row.get("TransformationTriggerMode")
    if mode == "Scheduled" and not row.get("ScheduledCron"):
        raise BadRequest("A scheduled transformation needs ScheduledCron", target="ScheduledCron")
    if mode == "AfterJob":
        job = row.get("TriggerAfterJob")
        if not job:
            raise BadRequest("TransformationTriggerMode AfterJob needs TriggerAfterJob", target="TriggerAfterJob")
        if not await common.exists(tx, "Jobs", "JobName", job):
            raise BadRequest(f"TriggerAfterJob names the job '{job}', which does not exist", target="TriggerAfterJob")
    queries = tx.extras.get("Query")
    if queries is not None:
        changes["Queries"] = [*(changes.get("Queries") or []), *ordered(queries)]
    for index, query in enumerate(changes.get("Queries") or [], start=1):
        if not isinstance(query, str) or not query.strip():
            raise BadRequest(f"Query {index} must be a non-empty string", target="Queries")


class TransformationHooks(EntityHooks):
    array_members = frozenset({"Query"})

    async def before_create(self, tx: WriteContext, values: dict) -> None:
        common.unexpected_extras(tx, ("Query",))
        common.check_name(values["TransformationName"], "TransformationName")
        await _validate(tx, {}, values)
        values["TransformationId"] = common.new_id()
        common.stamp_create(tx, values)

    async def before_update(self, tx: WriteContext, old: dict, changes: dict) -> None:
        common.unexpected_extras(tx, ("Query",))
        if old["Status"] in common.BUSY:
            raise Conflict(f"Transformation '{old['TransformationName']}' is running; it cannot be modified now")
        await _validate(tx, old, changes)
        common.stamp_update(tx, old, changes)

    async def before_delete(self, tx: WriteContext, old: dict) -> None:
        if old["Status"] in common.BUSY:
            raise Conflict(f"Transformation '{old['TransformationName']}' is running; it cannot be deleted now")
