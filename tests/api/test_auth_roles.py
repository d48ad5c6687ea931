"""Authentication (token header, Basic, URL token), users and tokens, the role matrix, and the Requests log."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import uuid

import pytest
import sqlalchemy as sa

from odata_sync.app import build_app, create_runtime
from tests.api.helpers import expect_error, insert_history, q, read_json, seed_connections, send
from tests.conftest import ADMIN_PASSWORD, ADMIN_TOKEN, Api, make_job

REALM = 'Basic realm="odata-sync"'
PASSWORD = "Str0ng-enough-pw"


def basic(user: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


async def _unauthorized(response) -> dict:
    error = await expect_error(response, 401)
    assert response.headers.get("WWW-Authenticate") == REALM
    return error


async def create_user(api: Api, name: str, roles: str, **extra) -> str:
    """Create a user through the Users set; return its one-time token."""
    body = await api.ok("POST", "Users", 201, json={"User": name, "Roles": roles, **extra})
    token = body["AuthToken"]
    assert isinstance(token, str) and len(token) >= 20
    return token


async def _requests_matching(api: Api, predicate, timeout: float = 3.0) -> list[dict]:
    """Poll the Requests set (flushed in ~0.5 s batches) until ``predicate(rows)`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = (await api.ok("GET", "Requests?$orderby=Timestamp"))["value"]
        if predicate(rows) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


# ---- authentication ---------------------------------------------------------------------------------------------


async def test_missing_or_wrong_credentials(api):
    for path in ("", "/api.rsc", "$metadata", "Jobs", "Jobs('x')", "CreateUsers"):
        method = "POST" if path == "CreateUsers" else "GET"
        await _unauthorized(await send(api, method, path, authenticated=False))
        await _unauthorized(await send(api, method, path, headers={"x-cdata-authtoken": "wrong-token-0123456789abc"},
                                       authenticated=False))
    for headers in (basic("admin", "wrong-password"), basic("nobody", ADMIN_PASSWORD), basic("nobody", ADMIN_TOKEN),
                    basic("admin", ""), {"Authorization": "Basic !!!not-base64"},
                    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
                    {"Authorization": "Bearer " + ADMIN_TOKEN}, {"x-cdata-authtoken": ""}):
        await _unauthorized(await send(api, "GET", "Jobs", headers=headers, authenticated=False))
    # A URL token is refused unless the server allows it.
    await _unauthorized(await send(api, "GET", f"Jobs?@authtoken={ADMIN_TOKEN}", authenticated=False))


async def test_accepted_credentials(api):
    for headers in ({"x-cdata-authtoken": ADMIN_TOKEN}, {"X-CData-AuthToken": ADMIN_TOKEN},
                    basic("admin", ADMIN_TOKEN), basic("admin", ADMIN_PASSWORD)):
        for path in ("", "$metadata", "Jobs"):
            response = await send(api, "GET", path, headers=headers, authenticated=False)
            assert response.status == 200, (headers, path, await response.text())


async def test_url_token_when_enabled(aiohttp_client, config):
    runtime = await create_runtime(dataclasses.replace(config, allow_url_token=True))
    api = Api(await aiohttp_client(build_app(runtime)), token=None)
    for path in (f"Jobs?@authtoken={ADMIN_TOKEN}", f"Jobs?%40authtoken={ADMIN_TOKEN}&$top=1", f"?@authtoken={ADMIN_TOKEN}",
                 f"$metadata?@authtoken={ADMIN_TOKEN}"):
        response = await send(api, "GET", path)
        assert response.status == 200, (path, await response.text())
    await _unauthorized(await send(api, "GET", "Jobs?@authtoken=not-the-token-0123456789"))
    # The log keeps the URL without the token.
    admin = api.as_token(ADMIN_TOKEN)
    rows = await _requests_matching(admin, lambda rows: sum("authtoken" in r["URL"].lower() for r in rows) >= 5)
    logged = [r["URL"] for r in rows if "authtoken" in r["URL"].lower()]
    assert len(logged) >= 5, logged
    assert all("********" in url for url in logged), logged
    assert ADMIN_TOKEN not in json.dumps(rows) and "not-the-token" not in json.dumps(rows)


# ---- users and tokens -------------------------------------------------------------------------------------------


async def test_create_users_action(api, runtime):
    body = await api.ok("POST", "CreateUsers", json={
        "User#1": "ann", "Password#1": PASSWORD, "Roles#1": "cdata_standard", "Active#1": True,
        "User#2": "bob", "Roles#2": "cdata_support", "Active#2": "false"})
    assert body["@odata.context"].endswith("$metadata#Collection(CData.CreateUsersOutput)")
    rows = {row["User"]: row for row in body["value"]}
    assert set(rows) == {"ann", "bob"}
    assert rows["ann"]["Roles"] == "cdata_standard" and rows["ann"]["Active"] is True
    assert rows["bob"]["Active"] is False
    tokens = [rows["ann"]["AuthToken"], rows["bob"]["AuthToken"]]
    assert all(isinstance(t, str) and len(t) >= 20 for t in tokens) and tokens[0] != tokens[1]

    assert (await send(api.as_token(tokens[0]), "GET", "Jobs")).status == 200
    assert (await send(api, "GET", "Jobs", headers=basic("ann", PASSWORD), authenticated=False)).status == 200
    await _unauthorized(await send(api.as_token(tokens[1]), "GET", "Jobs"))  # inactive

    users = await api.ok("GET", "Users")
    assert {u["User"] for u in users["value"]} == {"admin", "ann", "bob"}
    for user in users["value"]:
        assert "Password" not in user and user["AuthToken"] is None
    ann = await api.ok("GET", "Users('ann')")
    assert "Password" not in ann and ann["AuthToken"] is None and ann["Roles"] == "cdata_standard"

    # Stored as hashes only.
    table = runtime.store.table("Users")
    async with runtime.store.engine.connect() as conn:
        stored = (await conn.execute(sa.select(table).where(table.c.User == "ann"))).mappings().one()
    assert stored["Password"].startswith("$argon2") and PASSWORD not in str(dict(stored))
    assert tokens[0] not in str(dict(stored))

    await expect_error(await send(api, "POST", "CreateUsers", json_body={"User#1": "ann"}), 409)
    await expect_error(await send(api, "POST", "CreateUsers", json_body={"Password#1": PASSWORD}), 400)
    await expect_error(await send(api, "POST", "CreateUsers", json_body={"User#1": "cat", "Roles#1": "root"}), 400)


async def test_create_users_with_sparse_numbered_members(api):
    body = await api.ok("POST", "CreateUsers", json={"User#1": "ann", "User#2": "bob", "Password#2": PASSWORD,
                                                     "Active#2": "false", "Roles#2": "cdata_support"})
    rows = {row["User"]: row for row in body["value"]}
    assert (rows["ann"]["Active"], rows["ann"]["Roles"]) == (True, "cdata_standard")
    assert (rows["bob"]["Active"], rows["bob"]["Roles"]) == (False, "cdata_support")
    await _unauthorized(await send(api, "GET", "Jobs", headers=basic("ann", PASSWORD), authenticated=False))


async def test_post_users_and_reset_token(api):
    response = await send(api, "POST", "Users", json_body={"User": "carl", "Password": PASSWORD,
                                                           "Roles": "cdata_job_creator"})
    assert response.status == 201
    created = await read_json(response)
    assert "Password" not in created and len(created["AuthToken"]) >= 20
    assert PASSWORD not in await response.text()
    first = created["AuthToken"]
    got = await api.ok("GET", "Users('carl')")
    assert got["AuthToken"] is None and "Password" not in got
    assert "Password" not in (await api.ok("GET", "Users?$filter=" + q("User eq 'carl'")))["value"][0]
    carl = api.as_token(first)
    assert (await send(carl, "GET", "Jobs")).status == 200

    # An admin resets carl's token: the old one stops working at once, the new one works.
    body = await api.ok("POST", "ResetAuthToken", json={"User": "carl"})
    assert body["value"][0]["User"] == "carl"
    second = body["value"][0]["AuthToken"]
    assert second != first and len(second) >= 20
    await _unauthorized(await send(carl, "GET", "Jobs"))
    carl = api.as_token(second)
    assert (await send(carl, "GET", "Jobs")).status == 200
    # A user may reset its own token, not another's.
    third = (await carl.ok("POST", "ResetAuthToken", json={}))["value"][0]["AuthToken"]
    await _unauthorized(await send(carl, "GET", "Jobs"))
    carl = api.as_token(third)
    await expect_error(await send(carl, "POST", "ResetAuthToken", json_body={"User": "admin"}), 403)
    await expect_error(await send(api, "POST", "ResetAuthToken", json_body={"User": "nobody"}), 404)

    for body in ({"User": "dan", "Password": "short"}, {"User": "dan", "Roles": "superuser"},
                 {"User": "dan", "Roles": ""}, {"User": "", "Roles": "cdata_standard"}):
        await expect_error(await send(api, "POST", "Users", json_body=body), 400)
    await expect_error(await send(api, "POST", "Users", json_body={"User": "carl"}), 409)


async def test_expired_in(api, runtime):
    before = dt.datetime.now(dt.UTC)
    token = await create_user(api, "eve", "cdata_standard", ExpiredIn=2)
    assert (await api.ok("GET", "Users('eve')"))["ExpiredIn"] == 2
    table = runtime.store.table("Users")
    async with runtime.store.engine.connect() as conn:
        expires = (await conn.execute(sa.select(table.c._TokenExpires).where(table.c.User == "eve"))).scalar_one()
    assert before + dt.timedelta(days=2) <= expires <= dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    # Move the expiry into the past (time travel through the store); the not-yet-used token is refused.
    async with runtime.store.engine.begin() as conn:
        await conn.execute(sa.update(table).where(table.c.User == "eve")
                           .values(_TokenExpires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    error = await _unauthorized(await send(api.as_token(token), "GET", "Jobs"))
    assert "expired" in error["message"].lower()
    # A fresh token after ResetAuthToken gets a fresh expiry.
    fresh = (await api.ok("POST", "ResetAuthToken", json={"User": "eve"}))["value"][0]["AuthToken"]
    assert (await send(api.as_token(fresh), "GET", "Jobs")).status == 200
    for bad in (0, -1, "soon"):
        await expect_error(await send(api, "PATCH", "Users('eve')", json_body={"ExpiredIn": bad}), 400)


async def test_inactive_users_are_refused(api):
    token = await create_user(api, "fay", "cdata_standard", Password=PASSWORD)
    fay = api.as_token(token)
    assert (await send(fay, "GET", "Jobs")).status == 200
    response = await send(api, "PATCH", "Users('fay')", json_body={"Active": False})
    assert response.status in (200, 204)
    await _unauthorized(await send(fay, "GET", "Jobs"))
    await _unauthorized(await send(api, "GET", "Jobs", headers=basic("fay", PASSWORD), authenticated=False))
    await send(api, "PATCH", "Users('fay')", json_body={"Active": "true"})
    assert (await send(fay, "GET", "Jobs")).status == 200


async def test_last_active_admin_is_protected(api):
    await expect_error(await send(api, "DELETE", "Users('admin')"), 409)
    await expect_error(await send(api, "PATCH", "Users('admin')", json_body={"Roles": "cdata_standard"}), 409)
    await expect_error(await send(api, "PATCH", "Users('admin')", json_body={"Active": False}), 409)
    await expect_error(await send(api, "PUT", "Users('admin')", json_body={"Active": "false"}), 409)
    # An inactive second admin does not count.
    await create_user(api, "sleepy", "cdata_admin", Active=False)
    await expect_error(await send(api, "DELETE", "Users('admin')"), 409)
    second = api.as_token(await create_user(api, "root2", "cdata_admin,cdata_standard"))
    response = await send(api, "PATCH", "Users('admin')", json_body={"Roles": "cdata_standard"})
    assert response.status in (200, 204)
    await expect_error(await send(second, "DELETE", "Users('root2')"), 409)
    await expect_error(await send(second, "PATCH", "Users('root2')", json_body={"Roles": "cdata_support"}), 409)
    assert (await send(second, "DELETE", "Users('sleepy')")).status == 204
    assert (await send(second, "DELETE", "Users('admin')")).status == 204


# ---- the role matrix ----------------------------------------------------------------------------------------------

SETS = ["Jobs", "Tasks", "Connections", "Transformations", "Users", "History", "TaskHistory", "Requests"]
READ_ONLY_SETS = {"History", "TaskHistory", "Requests"}
# API.md §2: which sets each role may read and write.
READ = {
    "cdata_admin": set(SETS),
    "cdata_standard": set(SETS) - {"Requests"},
    "cdata_job_creator": set(SETS) - {"Requests"},
    "cdata_support": set(SETS) - {"Requests"},
}
WRITE = {
    "cdata_admin": set(SETS),
    "cdata_standard": {"Jobs", "Tasks", "Connections", "Transformations"},
    "cdata_job_creator": {"Jobs", "Tasks", "Transformations"},
    "cdata_support": set(),
}


def _new_entity(entity_set: str, tag: str) -> dict:
    return {
        "Jobs": {"JobName": f"{tag}-job", "Source": "src", "Destination": "dst"},
        "Tasks": {"JobName": "seed", "Table": f"{tag}_table"},
        "Connections": {"Name": f"{tag}-conn", "ProviderName": "SQLite", "ConnectionString": "Database=/tmp/x.db"},
        "Transformations": {"TransformationName": f"{tag}-tr", "Connection": "dst", "Queries": ["SELECT 1"]},
        "Users": {"User": f"{tag}-user", "Roles": "cdata_standard"},
        "History": {"RunId": str(uuid.uuid4()), "Status": "SUCCESS", "JobName": "seed"},
        "TaskHistory": {"RunId": str(uuid.uuid4()), "HistoryId": 1, "Status": "SUCCESS"},
        "Requests": {"Method": "GET", "URL": "/x", "Status": 200},
    }[entity_set]


async def _seed_everything(api: Api, runtime) -> None:
    await seed_connections(api)
    await make_job(api, "seed", **{"Query#1": "REPLICATE [a]"})
    await api.ok("POST", "Transformations", 201, json={"TransformationName": "tr", "Connection": "dst",
                                                       "Queries": ["SELECT 1"]})
    history_id = await insert_history(runtime, "seed")
    table = runtime.store.table("TaskHistory")
    async with runtime.store.engine.begin() as conn:
        await conn.execute(table.insert().values(RunId=str(uuid.uuid4()), HistoryId=history_id, JobName="seed",
                                                 TaskId=1, Status="SUCCESS"))


@pytest.mark.parametrize("role", ["cdata_admin", "cdata_standard", "cdata_job_creator", "cdata_support"])
async def test_role_matrix(api, runtime, role):
    await _seed_everything(api, runtime)
    name = f"{role}-caller"
    caller = api.as_token(await create_user(api, name, role))
    failures = []
    for entity_set in SETS:
        response = await send(caller, "GET", entity_set)
        expected = 200 if entity_set in READ[role] else 403
        if response.status != expected:
            failures.append(f"GET {entity_set}: {response.status}, expected {expected}")
        elif expected == 403:
            await expect_error(response, 403)
        else:
            body = await read_json(response)
            if entity_set == "Users" and role != "cdata_admin":
                if [u["User"] for u in body["value"]] != [name]:
                    failures.append(f"GET Users lists {[u['User'] for u in body['value']]}, expected only {name}")
            elif entity_set != "Requests" and not body["value"]:
                failures.append(f"GET {entity_set}: no rows")
        response = await send(caller, "POST", entity_set, json_body=_new_entity(entity_set, role))
        expected = 403 if entity_set not in WRITE[role] else 405 if entity_set in READ_ONLY_SETS else 201
        if response.status != expected:
            failures.append(f"POST {entity_set}: {response.status}, expected {expected}: {(await response.text())[:200]}")
        elif expected != 201:
            await expect_error(response, expected)
    assert not failures, "\n".join(failures)

    # Entity-level checks.
    can_write_jobs = "Jobs" in WRITE[role]
    response = await send(caller, "PATCH", "Jobs('seed')", json_body={"Verbosity": 3})
    assert response.status in ((200, 204) if can_write_jobs else (403,)), await response.text()
    if not can_write_jobs:
        await expect_error(await send(caller, "DELETE", "Jobs('seed')"), 403)
        await expect_error(await send(caller, "PATCH", "Connections('src')", json_body={"Verbosity": 3}), 403)
    own = await send(caller, "GET", f"Users('{name}')")
    assert own.status == 200 and (await read_json(own))["User"] == name
    if role != "cdata_admin":
        await expect_error(await send(caller, "GET", "Users('admin')"), 403)
        await expect_error(await send(caller, "PATCH", "Users('admin')", json_body={"Active": False}), 403)
        await expect_error(await send(caller, "POST", "CreateUsers", json_body={"User#1": "intruder"}), 403)
        await expect_error(await send(caller, "GET", "Requests('" + str(uuid.uuid4()) + "')"), 403)
    if role == "cdata_support":
        await expect_error(await send(caller, "POST", "TestConnection", json_body={"ConnectionName": "src"}), 403)
        response = await send(caller, "POST", "GetJobStatus", json_body={"JobName": "no-such-job"})
        assert response.status != 403, "support may read job status"

    # Connection strings: job creators see names only.
    connections = await caller.ok("GET", "Connections?$orderby=Name")
    single = await caller.ok("GET", "Connections('src')")
    if role == "cdata_job_creator":
        assert all(c["ConnectionString"] is None for c in connections["value"])
        assert single["ConnectionString"] is None and single["Name"] == "src"
        await expect_error(await send(caller, "GET", "Connections?$filter=" + q("ConnectionString ne null")), 400)
    else:
        assert single["ConnectionString"] == "Database=/tmp/src.db"


# ---- the Requests log -------------------------------------------------------------------------------------------


async def test_requests_log(api):
    secret_token = await create_user(api, "gus", "cdata_standard", Password=PASSWORD)
    gus = api.as_token(secret_token)
    await send(gus, "GET", "Jobs?$top=1")
    await send(api, "GET", "Jobs('missing')")
    await send(api, "GET", "Jobs?$select=JobName", headers=basic("admin", ADMIN_PASSWORD), authenticated=False)
    await send(api, "GET", "Jobs?password=hunter2-secret&@authtoken=" + secret_token, authenticated=False)
    await send(api, "GET", "Requests", headers=basic("gus", PASSWORD), authenticated=False)

    def complete(rows):
        return sum(1 for r in rows if r["URL"].startswith("/api.rsc/Jobs")) >= 4 and any(
            r["URL"] == "/api.rsc/Requests" and r["User"] == "gus" for r in rows)

    rows = await _requests_matching(api, complete)
    assert complete(rows), rows
    by_url = {}
    for row in rows:
        by_url.setdefault(row["URL"], row)
    top = by_url["/api.rsc/Jobs?$top=1"]
    assert (top["Method"], top["User"], top["Status"]) == ("GET", "gus", 200)
    assert isinstance(top["Runtime"], int) and top["Runtime"] >= 0 and top["Timestamp"].endswith("Z")
    assert top["RemoteIP"] and top["Error"] is None
    uuid.UUID(top["Id"])
    missing = by_url["/api.rsc/Jobs('missing')"]
    assert missing["Status"] == 404 and missing["User"] == "admin" and missing["Error"]
    assert by_url["/api.rsc/Jobs?$select=JobName"]["User"] == "admin"
    refused = next(r for r in rows if "password=" in r["URL"])
    assert refused["Status"] == 401 and refused["User"] is None
    assert "hunter2" not in refused["URL"] and secret_token not in refused["URL"]
    assert by_url["/api.rsc/Requests"]["Status"] == 403

    # No secret anywhere in the log.
    dump = json.dumps(rows)
    for secret in (ADMIN_TOKEN, ADMIN_PASSWORD, PASSWORD, secret_token, "hunter2"):
        assert secret not in dump, secret

    # The log reads like any set, and can be pruned one entry or a filter at a time.
    count = await api.ok("GET", "Requests/$count?$filter=" + q("Status eq 404"))
    assert int(count) >= 1
    await api.ok("DELETE", f"Requests('{top['Id']}')", 204)
    await expect_error(await send(api, "GET", f"Requests({top['Id']})"), 404)
    response = await send(api, "DELETE", "Requests?$filter=" + q("Status eq 404"))
    assert response.status == 204
    assert await api.ok("GET", "Requests/$count?$filter=" + q("Status eq 404")) == "0"
    assert int(await api.ok("GET", "Requests/$count")) >= 3
    await expect_error(await send(api, "PATCH", f"Requests({missing['Id']})", json_body={"Status": 200}), 405)


async def test_request_log_prunes_old_entries(api, runtime):
    """Entries older than the retention are dropped by the log's periodic prune; recent ones stay."""
    import datetime as dt

    import sqlalchemy as sa

    table = runtime.store.table("Requests")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=runtime.config.request_log_days + 1)
    async with runtime.store.write() as conn:
        await conn.execute(table.insert().values(Id="00000000-0000-0000-0000-000000000001", Timestamp=old,
                                                 Method="GET", URL="/api.rsc/Jobs", Status=200))
    await api.ok("GET", "Jobs")
    await runtime.request_log.flush()
    assert await runtime.request_log.prune() == 1
    async with runtime.store.engine.connect() as conn:
        left = (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
    assert left >= 1


async def test_request_log_stop_lets_a_flush_finish_and_writes_the_rest(runtime):
    """Stopping while a batch is being written waits for it (a cancelled write could leave its transaction open),
    then writes what came after; nothing recorded before the stop is lost."""
    from odata_sync.service.requestlog import RequestLog

    log = RequestLog(runtime.store, {}, interval=60)
    log.start()
    for i in range(3000):  # more than max_batch: the log wakes and starts writing at once
        log.record(method="GET", url=f"/api.rsc/Jobs?n={i}", user="admin", remote="127.0.0.1", status=200,
                   runtime_ms=1, error=None)
    await asyncio.sleep(0)
    log.record(method="GET", url="/api.rsc/Jobs?last", user="admin", remote="127.0.0.1", status=200, runtime_ms=1,
               error=None)
    await log.stop()
    table = runtime.store.table("Requests")
    async with runtime.store.engine.connect() as conn:
        urls = (await conn.execute(sa.select(table.c.URL).where(table.c.URL.like("%Jobs?%")))).scalars().all()
    assert len(urls) == 3001 and "/api.rsc/Jobs?last" in urls
