"""Small checks shared by the entity-set hooks."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from croniter import croniter

from odata_sync.errors import BadRequest, Conflict
from odata_sync.odata.hooks import WriteContext

BUSY = ("QUEUED", "RUNNING", "CANCELLING")


def new_id() -> str:
    return str(uuid.uuid4())


def stamp_create(tx: WriteContext, values: dict) -> None:
    values["Created"] = values["Modified"] = tx.now


def later(previous: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """A Modified value strictly after ``previous``: every write must move it (ETags and the row cache rely on it)."""
    if previous is not None and previous.tzinfo is None:
        previous = previous.replace(tzinfo=dt.UTC)
    return now if previous is None or now > previous else previous + dt.timedelta(microseconds=1)


def stamp_update(tx: WriteContext, old: dict, changes: dict) -> None:
    changes["Modified"] = later(old.get("Modified"), tx.now)


async def touch(conn, table: sa.Table, where: sa.ColumnElement, now: dt.datetime, **values) -> None:
    """Update rows outside the entity hooks (state the server keeps), moving each row's Modified forward."""
    rows = (await conn.execute(sa.select(table.c.Modified, *table.primary_key.columns).where(where))).all()
    key = table.primary_key.columns[0]
    for row in rows:
        await conn.execute(sa.update(table).where(key == row[1]).values(Modified=later(row[0], now), **values))


def check_name(value: str, what: str) -> None:
    if not value or not value.strip():
        raise BadRequest(f"{what} must not be empty", target=what)
    if any(ord(ch) < 32 for ch in value):
        raise BadRequest(f"{what} must not contain control characters", target=what)


def check_cron(expression: str | None, what: str = "ScheduledCron") -> None:
    if expression is None:
        return
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise BadRequest(f"{what} '{expression}' is not a valid 5-field cron expression "
                         "(minute hour day-of-month month day-of-week)", target=what)


def next_run(expression: str, after: dt.datetime) -> dt.datetime:
    return croniter(expression, after).get_next(dt.datetime).astimezone(dt.UTC)


def check_range(values: dict, name: str, low: int, high: int | None = None) -> None:
    value = values.get(name)
    if value is not None and (value < low or (high is not None and value > high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bound}", target=name)


def check_choice(values: dict, name: str, choices: tuple[str, ...]) -> None:
    value = values.get(name)
    if value is None:
        return
    for choice in choices:
        if value.lower() == choice.lower():
            values[name] = choice
            return
    raise BadRequest(f"{name} must be one of {', '.join(choices)}", target=name)


async def exists(tx: WriteContext, entity_set: str, column: str, value) -> bool:
    table = tx.tables(entity_set)
    query = sa.select(sa.literal(1)).select_from(table).where(table.c[column] == value).limit(1)
    return (await tx.conn.execute(query)).first() is not None


async def require_connection(tx: WriteContext, name: str | None, what: str) -> None:
    if name is not None and not await exists(tx, "Connections", "Name", name):
        raise BadRequest(f"{what} names the connection '{name}', which does not exist", target=what)


async def job_status(tx: WriteContext, job_name: str, *, lock: bool = False) -> str | None:
    """The job's Status (None: no such job). ``lock`` holds the job row until commit (PostgreSQL), so concurrent
    writers of its tasks queue up instead of both taking the same Index."""
    jobs = tx.tables("Jobs")
    query = sa.select(jobs.c.Status).where(jobs.c.JobName == job_name)
    if lock and tx.conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return (await tx.conn.execute(query)).scalar()


async def refuse_if_running(tx: WriteContext, job_name: str, doing: str) -> None:
    if await job_status(tx, job_name) in BUSY:
        raise Conflict(f"Job '{job_name}' is running; it cannot {doing} until the run ends")


def unexpected_extras(tx: WriteContext, allowed: tuple[str, ...] = ()) -> None:
    for name in tx.extras:
        if name not in allowed:
            raise BadRequest(f"'{name}#N' members are not accepted here")
