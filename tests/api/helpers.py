"""Helpers shared by the API tests: exact-URL requests, error-body checks, and small data sets seeded over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from yarl import URL

from tests.conftest import Api, make_connection, make_job

# What a response body must never contain: signs of a leaked Python traceback.
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', ".py\", line ", "sqlalchemy.exc", "asyncpg.exceptions")


def xfail_on_store(request, store: str, reason: str) -> None:
    """Mark the running test as a strict expected failure on one store only (``sqlite`` or ``postgresql``)."""
    if request.node.callspec.params.get("store_url") == store:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


def q(text: str) -> str:
    """Percent-encode a query-option value the way careful clients do (``+`` becomes ``%2B``)."""
    return quote(text, safe="(),'$/:=*;@")


async def send(api: Api, method: str, path: str, *, headers: dict | None = None, data=None, json_body=None,
               authenticated: bool = True):
    """Send ``path`` exactly as written (already percent-encoded); relative paths are under the service root."""
    url = path if path.startswith("/") else api.root + path
    merged = {"x-cdata-authtoken": api.token} if authenticated and api.token else {}
    merged.update(headers or {})
    return await api.client.request(method, URL(url, encoded=True), headers=merged, data=data, json=json_body)


async def read_json(response) -> dict:
    return json.loads(await response.text())


async def expect_error(response, status: int) -> dict:
    """Assert an OData error body with ``status``, one OData-Version header and no traceback; return the error."""
    text = await response.text()
    assert response.status == status, f"{response.method} {response.url}: {response.status} {text[:500]}"
    try:
        body = json.loads(text)
    except ValueError:
        raise AssertionError(f"not an OData error body: {text[:300]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    assert response.headers.getall("OData-Version") == ["4.0"]
    assert response.content_type == "application/json"
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, text
    return error


def nested_expand(levels: int) -> str:
    """``Tasks($expand=Job($expand=Tasks(...)))`` nested ``levels`` deep, for the Jobs set."""
    navs = ["Tasks" if i % 2 == 0 else "Job" for i in range(levels)]
    inner = navs[-1]
    for nav in reversed(navs[:-1]):
        inner = f"{nav}($expand={inner})"
    return inner


def names(body: dict, key: str = "JobName") -> list:
    return [row[key] for row in body["value"]]


async def seed_connections(api: Api) -> None:
    await make_connection(api, "src")
    await make_connection(api, "dst")


# The job data set used by filter/order/search tests: (name, settings, queries, Created).
JOBS = [
    ("alpha", {"BatchSize": 100, "Verbosity": 1, "CommandTimeout": 30, "TableNamePrefix": "pre_"},
     ["REPLICATE [a]", "REPLICATE [b]", "REPLICATE [c]"], dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.UTC)),
    ("beta", {"BatchSize": 250, "Verbosity": 2, "Scheduled": True, "ScheduledCron": "0 * * * *"},
     ["REPLICATE [orders]"], dt.datetime(2022, 11, 12, 13, 14, 15, tzinfo=dt.UTC)),
    ("Gamma Job", {"BatchSize": 500, "Verbosity": 3, "CommandTimeout": 60, "TableNamePrefix": "  pad  "},
     [], dt.datetime(2023, 1, 1, 0, 0, 0, tzinfo=dt.UTC)),
    ("delta", {"Verbosity": 4, "TableNamePrefix": "x"},
     ["REPLICATE [b]"], dt.datetime(2019, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
]


async def seed_jobs(api: Api, runtime) -> None:
    """Create the connections and the four JOBS (tasks included); pin each job's Created for date tests."""
    await seed_connections(api)
    for name, settings, queries, _created in JOBS:
        extra = {f"Query#{i}": query for i, query in enumerate(queries, start=1)}
        await make_job(api, name, **settings, **extra)
    jobs = runtime.store.table("Jobs")
    async with runtime.store.engine.begin() as conn:
        for name, _settings, _queries, created in JOBS:
            await conn.execute(sa.update(jobs).where(jobs.c.JobName == name).values(Created=created))


async def insert_history(runtime, job_name: str, status: str = "SUCCESS", **values) -> int:
    """A run-history row, written through the store (runs are not started by these tests)."""
    table = runtime.store.table("History")
    row = {"RunId": str(uuid.uuid4()), "JobName": job_name, "Status": status,
           "RunStartDate": dt.datetime.now(dt.UTC), **values}
    async with runtime.store.engine.begin() as conn:
        result = await conn.execute(table.insert().values(**row))
    return result.inserted_primary_key[0]
