"""End-to-end basics over both stores: create connections and a job with tasks, read them back with options."""

from tests.conftest import make_connection, make_job


async def test_create_and_query(api):
    await make_connection(api, "src")
    await make_connection(api, "dst")
    job = await make_job(api, "job1", **{"Query#1": "REPLICATE [a]", "Query#2": "REPLICATE [b]"})
    assert job["Status"] == "IDLE" and job["Created"].endswith("Z")
    body = await api.ok("GET", "Jobs?$expand=Tasks($select=Query,Index;$orderby=Index desc)&$select=JobName")
    assert body["@odata.context"].endswith("$metadata#Jobs(JobName,Tasks(Query,Index))")
    assert [t["Query"] for t in body["value"][0]["Tasks"]] == ["REPLICATE [b]", "REPLICATE [a]"]
    tasks = await api.ok("GET", "Tasks('job1')")
    assert [t["TaskId"] for t in tasks["value"]] == [1, 2]
    count = await api.ok("GET", "Jobs/$count?$filter=Source eq 'src'")
    assert count == "1"


async def test_head_is_get_without_a_body(api):
    await make_connection(api, "src")
    response = await api.request("HEAD", "Connections('src')")
    assert response.status == 200 and response.headers["ETag"].startswith('W/"')
    assert await response.read() == b""
    assert (await api.request("HEAD", "$metadata")).status == 200
