"""GetJobStatus given a transformation (by TransformationName or its id in JobId): the same JobStatus a job gets,
through its run's life: queued, running (per-query rows, progress by queries done), cancelled, finished."""

from __future__ import annotations

import asyncio
import dataclasses

from odata_sync.app import build_app, create_runtime
from tests.api.test_executor import setup_job
from tests.conftest import Api

WAIT = 10.0
SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "
        "SELECT count(*) FROM c")
FIELDS = {"JobId", "JobName", "RunId", "Status", "Progress", "Stage", "Detail", "RunStartDate", "EstimatedCompletion",
          "RecordsAffected", "Queries", "Jobs"}


async def make_transformation(api: Api, name: str, *queries: str) -> dict:
    body = {"TransformationName": name, "Connection": "dst", **{f"Query#{i}": q for i, q in enumerate(queries, 1)}}
    return await api.ok("POST", "Transformations", 201, json=body)


async def status_of(api: Api, **params) -> dict:
    body = await api.ok("POST", "GetJobStatus", json=params)
    assert body["@odata.context"].endswith("$metadata#CData.JobStatus") and set(body) >= FIELDS, body
    return body


async def wait_for_status(api: Api, name: str, check) -> dict:
    async def poll() -> dict:
        while True:
            status = await status_of(api, JobName=name)
            if check(status):
                return status
            await asyncio.sleep(0.02)
    return await asyncio.wait_for(poll(), WAIT)


async def test_status_of_a_queued_transformation(config, aiohttp_client, tmp_path):
    # an API-only node runs nothing: the run stays QUEUED
    api = Api(await aiohttp_client(build_app(await create_runtime(dataclasses.replace(config, role="api")))))
    await setup_job(api, tmp_path, rows=10)
    created = await make_transformation(api, "rollup", "CREATE TABLE t (n INTEGER)", "INSERT INTO t VALUES (1)")
    idle = await status_of(api, JobName="rollup")
    assert (idle["Status"], idle["RunId"], idle["JobId"]) == ("IDLE", None, created["TransformationId"])

    queued = await api.ok("POST", "ExecuteJob", json={"JobName": "rollup", "Async": True})
    run_id = queued["value"][0]["RunId"]
    for params in ({"JobName": "rollup"}, {"JobId": created["TransformationId"]}):
        status = await status_of(api, **params)
        assert (status["JobName"], status["Status"], status["RunId"]) == ("rollup", "QUEUED", run_id)
        assert (status["Stage"], status["Progress"], status["Detail"]) == ("queued", 0, "QUEUED")
        assert [(q["TaskId"], q["Query"], q["Status"]) for q in status["Queries"]] == [
            (1, "CREATE TABLE t (n INTEGER)", "QUEUED"), (2, "INSERT INTO t VALUES (1)", "QUEUED")]
    assert (await status_of(api, JobName="rollup", PushOnQuery=False))["Queries"] is None

    await api.ok("POST", "CancelJob", json={"JobName": "rollup"})
    cancelled = await status_of(api, JobName="rollup")
    assert (cancelled["Status"], cancelled["RunId"], cancelled["Stage"]) == ("IDLE", run_id, "finished")
    assert [q["Status"] for q in cancelled["Queries"]] == ["CANCELLED", "CANCELLED"]

    missing = await api.error("POST", "GetJobStatus", 404, json={"JobName": "no such thing"})
    assert "no such thing" in missing["message"]
    await api.error("POST", "GetJobStatus", 404, json={"JobId": "00000000-0000-0000-0000-000000000000"})


async def test_status_of_a_running_then_finished_transformation(api, tmp_path):
    await setup_job(api, tmp_path, rows=10)
    await make_transformation(api, "slow", "CREATE TABLE marks (n INTEGER)", "INSERT INTO marks VALUES (1), (2)", SLOW)
    queued = await api.ok("POST", "ExecuteJob", json={"JobName": "slow", "Async": True})
    run_id = queued["value"][0]["RunId"]
    running = await wait_for_status(api, "slow", lambda s: s["Queries"][2]["Status"] == "RUNNING")
    assert (running["Status"], running["RunId"], running["Stage"]) == ("RUNNING", run_id, "query 3 of 3")
    assert running["Progress"] == 66 and running["EstimatedCompletion"] is not None  # two of three queries done
    assert [(q["Status"], q["Progress"]) for q in running["Queries"]] == [("SUCCESS", 100), ("SUCCESS", 100),
                                                                         ("RUNNING", 0)]
    assert running["Queries"][1]["RecordsAffected"] == 2 and running["RecordsAffected"] == 2

    await api.ok("POST", "CancelJob", json={"JobName": "slow", "Graceful": False})
    cancelled = await wait_for_status(api, "slow", lambda s: s["Status"] == "IDLE")
    assert (cancelled["RunId"], cancelled["Progress"], cancelled["Stage"]) == (run_id, 100, "finished")
    assert cancelled["Queries"][2]["Status"] == "CANCELLED"

    await api.ok("PATCH", "Transformations('slow')", json={"Queries": [
        "CREATE TABLE IF NOT EXISTS marks (n INTEGER)", "INSERT INTO marks VALUES (1), (2), (3)"]})
    done = await api.ok("POST", "ExecuteJob", json={"JobName": "slow"})
    assert [r["Status"] for r in done["value"]] == ["SUCCESS", "SUCCESS"]
    finished = await status_of(api, JobName="slow")
    assert (finished["Status"], finished["RunId"], finished["Progress"]) == ("IDLE", done["value"][0]["RunId"], 100)
    assert (finished["Stage"], finished["RecordsAffected"], finished["Detail"]) == ("finished", 3, "SUCCESS")
    assert [(q["Status"], q["Result"]) for q in finished["Queries"]] == [("SUCCESS", None), ("SUCCESS", None)]
    transformation = await api.ok("GET", "Transformations('slow')")
    assert transformation["LastRunStatus"] == "SUCCESS" and transformation["Status"] == finished["Status"]
    everything = await status_of(api)  # with nothing named: every job, as before
    assert [j["JobName"] for j in everything["Jobs"]] == ["nightly"]
