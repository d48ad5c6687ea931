"""Create, update and delete: statuses, headers, ETags, validation, defaults and the CData rules between sets."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid

import sqlalchemy as sa

from tests.api.helpers import expect_error, insert_history, read_json, seed_connections, send
from tests.conftest import make_connection, make_job

PG_CONN = "Server=db.example.com;Port=5432;Database=sales;User=etl;Password=s3cret-Pa55"


def _instant(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text[:-1] + "+00:00")


def _mentions(error: dict, name: str) -> bool:
    return name in error.get("message", "") or error.get("target") == name


# ---- POST -----------------------------------------------------------------------------------------------------


async def test_post_returns_entity_location_and_etag(api):
    await seed_connections(api)
    response = await send(api, "POST", "Jobs", json_body={"JobName": "j1", "Source": "src", "Destination": "dst",
                                                          "BatchSize": 100})
    assert response.status == 201
    body = await read_json(response)
    assert next(iter(body)) == "@odata.context" and body["@odata.context"].endswith("$metadata#Jobs/$entity")
    assert re.fullmatch(r"http://[^/]+/api\.rsc/Jobs\('j1'\)", response.headers["Location"])
    assert response.headers["ETag"] == body["@odata.etag"] and response.headers["ETag"].startswith('W/"')
    assert body["JobName"] == "j1" and body["BatchSize"] == 100
    uuid.UUID(body["JobId"])
    assert body["Created"].endswith("Z") and body["Modified"].endswith("Z")
    # Defaults (API.md §3 and §7).
    assert body["Status"] == "IDLE" and body["Type"] == "Standard" and body["Verbosity"] == 2
    assert body["AlterSchema"] is True and body["ContinueOnError"] is True
    assert body["SkipDeleted"] is False and body["AutomaticJobRetry"] is False and body["Scheduled"] is False
    assert body["NextRun"] is None and body["LastRun"] is None

    response = await send(api, "POST", "Jobs", headers={"Prefer": "return=minimal"},
                          json_body={"JobName": "j2", "Source": "src", "Destination": "dst"})
    assert response.status == 204 and await response.read() == b""
    assert response.headers["OData-EntityId"] == response.headers["Location"]
    assert response.headers["Location"].endswith("/api.rsc/Jobs('j2')")
    assert (await api.ok("GET", "Jobs('j2')"))["JobName"] == "j2"

    connection = await api.ok("GET", "Connections('src')")
    assert connection["ConnectionState"] == "Untested" and connection["LastTested"] is None


async def test_return_minimal_is_echoed_in_preference_applied(api):
    await seed_connections(api)
    response = await send(api, "POST", "Jobs", headers={"Prefer": "return=minimal"},
                          json_body={"JobName": "j2", "Source": "src", "Destination": "dst"})
    assert response.status == 204
    assert "return=minimal" in response.headers.get("Preference-Applied", "")


async def test_patch_and_put_merge(api):
    await seed_connections(api)
    created = await make_job(api, "j", BatchSize=100, TableNamePrefix="p_", Verbosity=1)
    etags = [created["@odata.etag"]]

    response = await send(api, "PATCH", "Jobs('j')", json_body={"Verbosity": 3})
    assert response.status in (200, 204), await response.text()
    etags.append(response.headers["ETag"])
    body = await api.ok("GET", "Jobs('j')")
    assert (body["Verbosity"], body["BatchSize"], body["TableNamePrefix"]) == (3, 100, "p_")

    # PUT merges like PATCH (API.md §7): unspecified settings keep their values.
    response = await send(api, "PUT", "Jobs('j')", json_body={"BatchSize": 10})
    assert response.status in (200, 204), await response.text()
    etags.append(response.headers["ETag"])
    body = await api.ok("GET", "Jobs('j')")
    assert (body["Verbosity"], body["BatchSize"], body["TableNamePrefix"]) == (3, 10, "p_")
    assert body["@odata.etag"] == etags[-1]
    assert len(set(etags)) == 3, "the ETag changes on every update"
    assert _instant(body["Modified"]) > _instant(created["Modified"]) and body["Created"] == created["Created"]

    # Setting a nullable property to null; changing the key is refused.
    await send(api, "PATCH", "Jobs('j')", json_body={"TableNamePrefix": None})
    assert (await api.ok("GET", "Jobs('j')"))["TableNamePrefix"] is None
    await expect_error(await send(api, "PATCH", "Jobs('j')", json_body={"JobName": "other"}), 400)

    response = await send(api, "PATCH", "Jobs('j')", json_body={"Verbosity": 4}, headers={"Prefer": "return=minimal"})
    assert response.status == 204 and await response.read() == b""
    assert (await api.ok("GET", "Jobs('j')"))["Verbosity"] == 4


async def test_delete_and_missing_entities(api):
    await seed_connections(api)
    await make_job(api, "j")
    response = await send(api, "DELETE", "Jobs('j')")
    assert response.status == 204 and await response.read() == b""
    await expect_error(await send(api, "GET", "Jobs('j')"), 404)
    # No upsert: PATCH/PUT/DELETE of a missing entity is 404 and creates nothing.
    for method in ("PATCH", "PUT"):
        await expect_error(await send(api, method, "Jobs('j')", json_body={"Source": "src", "Destination": "dst"}),
                           404)
        await expect_error(await send(api, method, "Tasks(99)", json_body={"Query": "REPLICATE [x]"}), 404)
        await expect_error(await send(api, method, "Connections('nope')", json_body={"Verbosity": 1}), 404)
    await expect_error(await send(api, "DELETE", "Jobs('j')"), 404)
    await expect_error(await send(api, "DELETE", "Tasks(99)"), 404)
    assert await api.ok("GET", "Jobs/$count") == "0"


async def test_etag_preconditions(api):
    await seed_connections(api)
    etag = (await make_job(api, "j"))["@odata.etag"]
    response = await send(api, "GET", "Jobs('j')")
    assert response.headers["ETag"] == etag

    response = await send(api, "GET", "Jobs('j')", headers={"If-None-Match": etag})
    assert response.status == 304 and await response.read() == b""
    response = await send(api, "GET", "Jobs('j')", headers={"If-None-Match": 'W/"something-else"'})
    assert response.status == 200

    for method, body in (("PATCH", {"Verbosity": 3}), ("PUT", {"Verbosity": 3}), ("DELETE", None)):
        await expect_error(await send(api, method, "Jobs('j')", json_body=body,
                                      headers={"If-Match": 'W/"0000000000000000"'}), 412)
    assert (await api.ok("GET", "Jobs('j')"))["Verbosity"] == 2, "a failed precondition changes nothing"

    response = await send(api, "PATCH", "Jobs('j')", json_body={"Verbosity": 3}, headers={"If-Match": etag})
    assert response.status in (200, 204)
    new_etag = response.headers["ETag"]
    assert new_etag != etag
    await expect_error(await send(api, "PATCH", "Jobs('j')", json_body={"Verbosity": 4}, headers={"If-Match": etag}),
                       412)
    response = await send(api, "PATCH", "Jobs('j')", json_body={"Verbosity": 4}, headers={"If-Match": "*"})
    assert response.status in (200, 204)
    response = await send(api, "DELETE", "Jobs('j')", headers={"If-Match": response.headers["ETag"]})
    assert response.status == 204


# ---- validation -----------------------------------------------------------------------------------------------


async def test_computed_properties_are_ignored_on_write(api):
    await seed_connections(api)
    fake_id = str(uuid.uuid4())
    body = await make_job(api, "j", Status="RUNNING", Created="2000-01-01T00:00:00Z", JobId=fake_id,
                          LastRunStatus="FAILED", NextRun="2000-01-01T00:00:00Z")
    assert body["Status"] == "IDLE" and body["JobId"] != fake_id and body["LastRunStatus"] is None
    assert body["Created"] > "2020" and body["NextRun"] is None
    response = await send(api, "PATCH", "Jobs('j')", json_body={"Status": "RUNNING", "Created": "2000-01-01T00:00:00Z"})
    assert response.status in (200, 204)
    after = await api.ok("GET", "Jobs('j')")
    assert after["Status"] == "IDLE" and after["Created"] == body["Created"]
    # The ignored Status did not make the job look busy: it can be deleted.
    assert (await send(api, "DELETE", "Jobs('j')")).status == 204


async def test_required_properties_types_and_unknown_names(api):
    await seed_connections(api)
    base = {"JobName": "j", "Source": "src", "Destination": "dst"}
    for missing in ("JobName", "Source", "Destination"):
        body = {k: v for k, v in base.items() if k != missing}
        error = await expect_error(await send(api, "POST", "Jobs", json_body=body), 400)
        assert _mentions(error, missing), error
    bad_values = {"Verbosity": "high", "Scheduled": "maybe", "BatchSize": 1.5, "JobName": 5, "Verbosity#": 1,
                  "CommandTimeout": [1], "AlterSchema": 1, "UseGmtDateTime": {"a": 1}, "BatchSize ": 1,
                  "ReplicateStartDate": 20240101, "Verbosity ": "x"}
    for name, value in bad_values.items():
        response = await send(api, "POST", "Jobs", json_body={**base, name: value})
        error = await expect_error(response, 400)
        assert _mentions(error, name.strip().rstrip("#")), (name, error)
    error = await expect_error(await send(api, "POST", "Jobs", json_body={**base, "Bogus": 1}), 400)
    assert _mentions(error, "Bogus")
    await make_job(api, "ok")
    error = await expect_error(await send(api, "PATCH", "Jobs('ok')", json_body={"Bogus": 1}), 400)
    assert _mentions(error, "Bogus")
    error = await expect_error(await send(api, "PATCH", "Jobs('ok')", json_body={"Verbosity": "loud"}), 400)
    assert _mentions(error, "Verbosity")
    for name, value in (("Verbosity", 9), ("Verbosity", 0), ("BatchSize", 0), ("ReplicateIntervalUnit", "fortnights")):
        await expect_error(await send(api, "POST", "Jobs", json_body={**base, name: value}), 400)
    assert await api.ok("GET", "Jobs/$count") == "1"


async def test_body_names_are_case_insensitive_and_odata_type(api):
    await seed_connections(api)
    body = await api.ok("POST", "Jobs", 201, json={"jobname": "lc", "SOURCE": "src", "destination": "dst",
                                                    "verbosity": 3, "@odata.type": "#CData.Job"})
    assert body["JobName"] == "lc" and body["Verbosity"] == 3 and "verbosity" not in body
    await api.ok("POST", "Jobs", 201, json={"JobName": "t2", "Source": "src", "Destination": "dst",
                                            "@odata.type": "CData.Job", "@odata.context": "x"})
    for wrong in ("#CData.Task", "#Other.Job", 5):
        await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "t3", "Source": "src",
                                                                      "Destination": "dst", "@odata.type": wrong}), 400)


async def test_nulls_mean_defaults_and_lenient_scalars(api):
    await seed_connections(api)
    # python-odata posts every non-computed property, nulls included.
    body = {"JobName": "py", "Source": "src", "Destination": "dst", "Type": None, "Scheduled": None,
            "ScheduledCron": None, "Verbosity": None, "AlterSchema": None, "ContinueOnError": None, "BatchSize": None,
            "SkipDeleted": None, "AutomaticJobRetry": None, "TableNamePrefix": None, "UseGmtDateTime": None}
    job = await api.ok("POST", "Jobs", 201, json=body)
    assert (job["Type"], job["Scheduled"], job["Verbosity"], job["AlterSchema"], job["ContinueOnError"]) == \
        ("Standard", False, 2, True, True)
    assert job["BatchSize"] is None and job["SkipDeleted"] is False

    job = await make_job(api, "strings", Scheduled="true", ScheduledCron="0 3 * * *", BatchSize="500",
                         Verbosity="3", AlterSchema="False", DropTable="True")
    assert job["Scheduled"] is True and job["BatchSize"] == 500 and job["Verbosity"] == 3
    assert job["AlterSchema"] is False and job["DropTable"] is True
    response = await send(api, "PATCH", "Jobs('strings')", json_body={"BatchSize": "42", "Scheduled": "False"})
    assert response.status in (200, 204)
    job = await api.ok("GET", "Jobs('strings')")
    assert job["BatchSize"] == 42 and job["Scheduled"] is False and job["NextRun"] is None


async def test_keys_conflicts_and_missing_references(api):
    await seed_connections(api)
    await make_job(api, "dup")
    error = await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "dup", "Source": "src",
                                                                          "Destination": "dst"}), 409)
    assert "dup" in error["message"]
    await make_job(api, "DUP")  # key values are case-sensitive
    await expect_error(await send(api, "POST", "Connections", json_body={
        "Name": "src", "ProviderName": "SQLite", "ConnectionString": "Database=/tmp/x.db"}), 409)

    error = await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "j", "Source": "nope",
                                                                          "Destination": "dst"}), 400)
    assert _mentions(error, "Source") and "nope" in error["message"]
    error = await expect_error(await send(api, "PATCH", "Jobs('dup')", json_body={"Destination": "nope"}), 400)
    assert _mentions(error, "Destination")
    await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "  ", "Source": "src",
                                                                  "Destination": "dst"}), 400)

    # A connection any job or transformation names cannot be deleted.
    await expect_error(await send(api, "DELETE", "Connections('src')"), 409)
    await make_connection(api, "warehouse")
    await api.ok("POST", "Transformations", 201, json={"TransformationName": "t", "Connection": "warehouse",
                                                       "Query#1": "SELECT 1"})
    await expect_error(await send(api, "DELETE", "Connections('warehouse')"), 409)
    await api.ok("DELETE", "Transformations('t')", 204)
    await api.ok("DELETE", "Connections('warehouse')", 204)
    for job in ("dup", "DUP"):
        await api.ok("DELETE", f"Jobs('{job}')", 204)
    await api.ok("DELETE", "Connections('src')", 204)


async def test_deleting_a_job_deletes_its_tasks_and_keeps_history(api, runtime):
    await seed_connections(api)
    await make_job(api, "gone", **{"Query#1": "REPLICATE [a]", "Query#2": "REPLICATE [b]"})
    await make_job(api, "kept", **{"Query#1": "REPLICATE [c]"})
    history_id = await insert_history(runtime, "gone")
    await api.ok("DELETE", "Jobs('gone')", 204)
    tasks = await api.ok("GET", "Tasks")
    assert [(t["TaskId"], t["JobName"]) for t in tasks["value"]] == [(3, "kept")]
    history = await api.ok("GET", f"History({history_id})")
    assert history["JobName"] == "gone" and history["Status"] == "SUCCESS"
    response = await send(api, "GET", f"History({history_id})/Job")
    assert response.status == 204, "the run's job is gone: a null single-valued navigation"
    assert (await api.ok("GET", f"History({history_id})?$expand=Job"))["Job"] is None


# ---- tasks -------------------------------------------------------------------------------------------------------


async def test_tasks(api):
    await seed_connections(api)
    await make_job(api, "j")
    error = await expect_error(await send(api, "POST", "Tasks", json_body={"JobName": "nope", "Query": "REPLICATE [a]"}),
                               400)
    assert _mentions(error, "JobName") or "nope" in error["message"]
    await expect_error(await send(api, "POST", "Tasks", json_body={"JobName": "j"}), 400)  # no Query, no Table
    await expect_error(await send(api, "POST", "Tasks", json_body={"Query": "REPLICATE [a]"}), 400)  # no JobName

    first = await api.ok("POST", "Tasks", 201, json={"JobName": "j", "Table": "orders"})
    assert first["TaskId"] == 1 and first["Index"] == 1 and first["Query"] == "REPLICATE [orders]"
    assert first["Created"].endswith("Z")
    second = await api.ok("POST", "Tasks", 201, json={"JobName": "j", "Query": "REPLICATE [b]"})
    third = await api.ok("POST", "Jobs('j')/Tasks", 201, json={"Table": "c"})
    assert (second["TaskId"], second["Index"], third["TaskId"], third["Index"], third["JobName"]) == (2, 2, 3, 3, "j")
    # Inserting at a taken Index shifts that task and the later ones.
    inserted = await api.ok("POST", "Tasks", 201, json={"JobName": "j", "Query": "REPLICATE [first]", "Index": 1})
    assert inserted["TaskId"] == 4 and inserted["Index"] == 1
    body = await api.ok("GET", "Jobs('j')/Tasks?$orderby=Index&$select=TaskId,Index")
    assert [(t["TaskId"], t["Index"]) for t in body["value"]] == [(4, 1), (1, 2), (2, 3), (3, 4)]
    await expect_error(await send(api, "POST", "Tasks", json_body={"JobName": "j", "Table": "x", "Index": 0}), 400)
    await expect_error(await send(api, "POST", "Tasks", json_body={"JobName": "j", "Query": "   "}), 400)
    # The Int64 key is computed: a client-sent TaskId is ignored.
    body = await api.ok("POST", "Tasks", 201, json={"JobName": "j", "Table": "y", "TaskId": 77})
    assert body["TaskId"] == 5
    # CData's Tasks('JobName') addresses the job's tasks; the named key form addresses one task.
    body = await api.ok("POST", "Tasks('j')", 201, json={"Table": "z"})
    assert (body["TaskId"], body["JobName"], body["Index"]) == (6, "j", 6)
    assert await api.ok("GET", "Tasks('j')/$count") == "6"
    assert (await api.ok("GET", "tasks(taskid=6)"))["Query"] == "REPLICATE [z]"


async def test_job_post_with_numbered_queries(api):
    await seed_connections(api)
    await make_job(api, "j", **{"Query#2": "REPLICATE [two]", "Query#10": "REPLICATE [ten]", "Query#1": "REPLICATE [one]",
                                "query#3": "REPLICATE [three]"})
    body = await api.ok("GET", "Tasks?$orderby=Index")
    assert [(t["TaskId"], t["Index"], t["Query"]) for t in body["value"]] == [
        (1, 1, "REPLICATE [one]"), (2, 2, "REPLICATE [two]"), (3, 3, "REPLICATE [three]"), (4, 4, "REPLICATE [ten]")]
    await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "k", "Source": "src", "Destination": "dst",
                                                                  "Query#1": ""}), 400)
    assert await api.ok("GET", "Jobs/$count") == "1", "a refused job leaves nothing behind"
    assert await api.ok("GET", "Tasks/$count") == "4"


async def test_transformations(api):
    await seed_connections(api)
    body = await api.ok("POST", "Transformations", 201, json={
        "TransformationName": "t1", "Connection": "dst", "Query#1": "DELETE FROM a", "Query#2": "INSERT INTO a SELECT 1"})
    assert body["Queries"] == ["DELETE FROM a", "INSERT INTO a SELECT 1"]
    uuid.UUID(body["TransformationId"])
    assert body["TransformationTriggerMode"] == "None" and body["Status"] == "IDLE"
    body = await api.ok("POST", "Transformations", 201, json={"TransformationName": "t2", "Connection": "dst",
                                                              "Queries": ["SELECT 1"]})
    assert body["Queries"] == ["SELECT 1"]
    await expect_error(await send(api, "POST", "Transformations", json_body={
        "TransformationName": "t3", "Connection": "missing", "Queries": ["SELECT 1"]}), 400)
    await expect_error(await send(api, "POST", "Transformations", json_body={
        "TransformationName": "t4", "Connection": "dst", "TransformationTriggerMode": "Scheduled",
        "ScheduledCron": "whenever"}), 400)
    await expect_error(await send(api, "POST", "Transformations", json_body={
        "TransformationName": "t5", "Connection": "dst", "TransformationTriggerMode": "AfterJob",
        "TriggerAfterJob": "no-such-job"}), 400)


async def test_cron_and_next_run(api):
    await seed_connections(api)
    base = {"Source": "src", "Destination": "dst"}
    for cron in ("not a cron", "* * * *", "0 0 * * * *", "61 * * * *", "* 25 * * *"):
        error = await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "c", "ScheduledCron": cron,
                                                                              **base}), 400)
        assert _mentions(error, "ScheduledCron"), error
    await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "c", "Scheduled": True, **base}), 400)

    before = dt.datetime.now(dt.UTC)
    job = await make_job(api, "c", Scheduled=True, ScheduledCron="0 3 * * *")
    assert job["NextRun"].endswith("Z")
    next_run = dt.datetime.fromisoformat(job["NextRun"].replace("Z", "+00:00"))
    assert before < next_run <= before + dt.timedelta(days=1)
    assert (next_run.hour, next_run.minute, next_run.second) == (3, 0, 0)
    job = await make_job(api, "unscheduled", ScheduledCron="*/5 * * * *")
    assert job["NextRun"] is None
    await send(api, "PATCH", "Jobs('c')", json_body={"ScheduledCron": "30 * * * *"})
    next_run = (await api.ok("GET", "Jobs('c')"))["NextRun"]
    assert next_run is not None and ":30:00" in next_run
    await send(api, "PATCH", "Jobs('c')", json_body={"Scheduled": False})
    assert (await api.ok("GET", "Jobs('c')"))["NextRun"] is None
    await expect_error(await send(api, "PATCH", "Jobs('c')", json_body={"ScheduledCron": "every day"}), 400)


async def test_type_accepts_one(api):
    await seed_connections(api)
    for name, value in (("s", "1"), ("w", "standard"), ("o", None)):
        assert (await make_job(api, name, Type=value))["Type"] == "Standard"
    assert (await api.ok("GET", "Jobs('s')"))["Type"] == "Standard"
    await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "x", "Source": "src", "Destination": "dst",
                                                                  "Type": "Exotic"}), 400)
    await expect_error(await send(api, "POST", "Jobs", json_body={"JobName": "x", "Source": "src", "Destination": "dst",
                                                                  "Type": 2}), 400)


async def test_type_accepts_the_number_one(api):
    await seed_connections(api)
    assert (await make_job(api, "n", Type=1))["Type"] == "Standard"
    assert (await api.ok("GET", "Jobs('n')"))["Type"] == "Standard"


# ---- connection strings ------------------------------------------------------------------------------------------


async def _stored_connection_string(runtime, name: str) -> str:
    table = runtime.store.table("Connections")
    async with runtime.store.engine.connect() as conn:
        return (await conn.execute(sa.select(table.c.ConnectionString).where(table.c.Name == name))).scalar_one()


async def test_connection_secrets_are_masked_and_encrypted(api, runtime):
    created = await make_connection(api, "pg", "PostgreSQL", PG_CONN)
    masked = created["ConnectionString"]
    assert "s3cret-Pa55" not in masked and re.search(r"Password=\*{8}(;|$)", masked), masked
    assert "Server=db.example.com" in masked and "User=etl" in masked
    read = await api.ok("GET", "Connections('pg')")
    assert read["ConnectionString"] == masked
    listing = await api.ok("GET", "Connections?$select=Name,ConnectionString")
    assert "s3cret" not in str(listing)

    stored = await _stored_connection_string(runtime, "pg")
    assert "s3cret-Pa55" not in stored and "db.example.com" not in stored, "encrypted at rest"
    assert runtime.service.box.decrypt(stored) == PG_CONN

    # Writing back the masked value (with another change) keeps the stored password.
    response = await send(api, "PATCH", "Connections('pg')",
                          json_body={"ConnectionString": masked.replace("Port=5432", "Port=6543")})
    assert response.status in (200, 204), await response.text()
    plain = runtime.service.box.decrypt(await _stored_connection_string(runtime, "pg"))
    assert "Password=s3cret-Pa55" in plain and "Port=6543" in plain
    response = await send(api, "PUT", "Connections('pg')", json_body={"ConnectionString": masked, "Verbosity": 3})
    assert response.status in (200, 204)
    plain = runtime.service.box.decrypt(await _stored_connection_string(runtime, "pg"))
    assert "Password=s3cret-Pa55" in plain
    # A new password replaces it; the response still masks it.
    response = await send(api, "PATCH", "Connections('pg')",
                          json_body={"ConnectionString": PG_CONN.replace("s3cret-Pa55", "n3w-S3cret")})
    assert "n3w-S3cret" not in await response.text()
    plain = runtime.service.box.decrypt(await _stored_connection_string(runtime, "pg"))
    assert "Password=n3w-S3cret" in plain

    # Secrets cannot be found by searching or filtering.
    assert (await api.ok("GET", "Connections?$search=n3w"))["value"] == []
    response = await send(api, "GET", "Connections?$filter=contains(ConnectionString,'n3w')")
    if response.status == 200:
        assert (await read_json(response))["value"] == []
    else:
        await expect_error(response, 400)
    await expect_error(await send(api, "POST", "Connections", json_body={
        "Name": "bad", "ProviderName": "Oracle", "ConnectionString": "Data Source=x"}), 400)
    await expect_error(await send(api, "POST", "Connections", json_body={
        "Name": "bad", "ProviderName": "SQLite", "ConnectionString": "Databse=/tmp/x.db"}), 400)


async def test_masked_secret_on_create_is_refused(api):
    error = await expect_error(await send(api, "POST", "Connections", json_body={
        "Name": "bad", "ProviderName": "PostgreSQL", "ConnectionString": "Server=x;Database=y;User=z;Password=********"}),
        400)
    assert "Password" in error["message"]


async def test_max_length_is_enforced(api):
    await seed_connections(api)
    long_name = "n" * 257
    for path, body in (("Jobs", {"JobName": long_name, "Source": "src", "Destination": "dst"}),
                       ("Connections", {"Name": long_name, "ProviderName": "SQLite", "ConnectionString": "Database=/x"}),
                       ("Users", {"User": long_name, "Roles": "cdata_standard"})):
        error = await expect_error(await send(api, "POST", path, json_body=body), 400)
        assert "256" in error["message"] or error.get("target") in ("JobName", "Name", "User"), error
    assert (await make_job(api, "n" * 256))["JobName"] == "n" * 256


async def test_concurrent_task_creation_keeps_indexes_distinct(api, request):
    await seed_connections(api)
    await make_job(api, "j")
    responses = await asyncio.gather(*(send(api, "POST", "Tasks", json_body={"JobName": "j", "Table": f"t{i}"})
                                       for i in range(8)))
    assert sorted(r.status for r in responses) == [201] * 8
    body = await api.ok("GET", "Jobs('j')/Tasks?$orderby=TaskId")
    assert [t["TaskId"] for t in body["value"]] == list(range(1, 9))
    assert sorted(t["Index"] for t in body["value"]) == list(range(1, 9))


async def test_concurrent_duplicate_creates(api):
    await seed_connections(api)
    responses = await asyncio.gather(*(send(api, "POST", "Jobs", json_body={"JobName": "same", "Source": "src",
                                                                            "Destination": "dst"}) for _ in range(6)))
    assert sorted(r.status for r in responses) == [201] + [409] * 5
    for response in responses:
        if response.status == 409:
            await expect_error(response, 409)
