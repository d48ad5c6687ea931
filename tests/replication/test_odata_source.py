"""OData as a source: odata-sync's own management API (a real OData 4.0 feed with paging, $filter, $orderby and
$select) replicated into SQLite. ``Jobs`` has a key (JobName) and a ``Modified`` stamp, found as the check column."""

from __future__ import annotations

from odata_sync.app import build_app, create_runtime
from odata_sync.config import Config
from odata_sync.connectors import open_connector
from odata_sync.replication import SUCCESS, TaskStarted
from tests.replication.checksum import checksum
from tests.replication.conftest import make_place, replicate

TOKEN = "replication-odata-token-0123456789"
JOBS = 150
COLUMNS = ["JobName", "JobId", "Type", "Source", "Destination", "Scheduled", "BatchSize", "TableNamePrefix",
           "AlterSchema", "Created", "Modified"]


async def test_odata_feed_to_sqlite(tmp_path, aiohttp_client):
    runtime = await create_runtime(Config(data_dir=tmp_path / "data", admin_token=TOKEN, max_page_size=40))
    client = await aiohttp_client(build_app(runtime))
    headers = {"x-cdata-authtoken": TOKEN}

    async def call(method: str, path: str, status: int, body: dict | None = None) -> None:
        response = await client.request(method, f"/api.rsc/{path}", headers=headers, json=body)
        assert response.status == status, await response.text()

    for name in ("a", "b"):
        await call("POST", "Connections", 201, {"Name": name, "ProviderName": "SQLite",
                                                "ConnectionString": f"Database={tmp_path / name}.db"})
    for i in range(JOBS):
        await call("POST", "Jobs", 201, {"JobName": f"job{i:03d}", "Source": "a", "Destination": "b",
                                         "BatchSize": i + 1, "TableNamePrefix": f"p{i % 7}_"})
    feed = open_connector("OData", f"URL={client.make_url('/api.rsc/')};AuthToken={TOKEN}")
    dst = make_place("SQLite", tmp_path).connector()
    try:
        full = await replicate(feed, dst, "REPLICATE [Jobs]", BatchSize=25)
        assert full.task.status == SUCCESS, full.task.error
        assert full.of(TaskStarted)[0].mode == "load" and full.task.inserted == JOBS
        assert await checksum(dst, "Jobs", COLUMNS) == await checksum(feed, "Jobs", COLUMNS)

        for i in range(0, 20, 2):
            await call("PATCH", f"Jobs('job{i:03d}')", 200, {"BatchSize": 1000 + i})
        for i in range(140, 145):
            await call("DELETE", f"Jobs('job{i:03d}')", 204)
        await call("POST", "Jobs", 201, {"JobName": "later", "Source": "b", "Destination": "a"})
        incremental = await replicate(feed, dst, "REPLICATE [Jobs]", BatchSize=25)
        task = incremental.task
        assert task.status == SUCCESS, task.error
        assert incremental.of(TaskStarted)[0].mode == "incremental"
        assert "Modified" in incremental.of(TaskStarted)[0].reason
        assert (task.inserted, task.updated, task.deleted) == (1, 10, 5)
        assert await checksum(dst, "Jobs", COLUMNS) == await checksum(feed, "Jobs", COLUMNS)
    finally:
        await feed.close()
        await dst.close()
        await client.close()
