"""The OData protocol surface: service document, $metadata, addressing, query options, formats and headers."""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote

from lxml import etree

from tests.api.helpers import (
    expect_error,
    insert_history,
    names,
    nested_expand,
    q,
    read_json,
    seed_connections,
    seed_jobs,
    send,
)
from tests.conftest import make_job

EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
EDM = "http://docs.oasis-open.org/odata/ns/edm"
NS = {"edmx": EDMX, "e": EDM}
SETS = ["Jobs", "Tasks", "Connections", "Transformations", "Users", "History", "TaskHistory", "Requests"]
POWER_QUERY_ACCEPT = ("application/json;odata.metadata=minimal;q=1.0,application/json;odata=minimalmetadata;q=0.9,"
                      "application/atomsvc+xml;q=0.8,application/atom+xml;q=0.8,application/xml;q=0.7,text/plain;q=0.7")


def _first_key(body: dict) -> str:
    return next(iter(body))


# ---- service document and $metadata -----------------------------------------------------------------------


async def test_service_document(api):
    for path in ("/api.rsc/", "/api.rsc"):
        response = await send(api, "GET", path)
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.headers.getall("OData-Version") == ["4.0"]
        body = await read_json(response)
        assert _first_key(body) == "@odata.context"
        assert re.fullmatch(r"http://[^/]+/api\.rsc/\$metadata", body["@odata.context"]), body
        assert [entry["name"] for entry in body["value"]] == SETS
        assert all(entry["kind"] == "EntitySet" and entry["url"] == entry["name"] for entry in body["value"])


COMPUTED = {
    "Job": {"JobId", "Status", "LastRun", "NextRun", "LastRunStatus", "Created", "Modified"},
    "Task": {"TaskId", "LastRunStatus", "LastRunRecords", "LastRun", "Created", "Modified"},
    "Connection": {"ConnectionState", "LastTested", "Created", "Modified"},
    "Transformation": {"TransformationId", "Status", "LastRun", "LastRunStatus", "Created", "Modified"},
    "User": {"UserId", "LastLogin", "AuthToken", "Created", "Modified"},
    "History": {"Id"},
    "TaskHistory": {"Id"},
    "Request": {"Id"},
}
# API.md §7 "Types": a sample of every decided type.
TYPES = {
    ("Job", "Verbosity"): "Edm.Int32", ("Job", "BatchSize"): "Edm.Int32", ("Job", "CommandTimeout"): "Edm.Int32",
    ("Job", "ReplicateInterval"): "Edm.Int32", ("Job", "ReplicateStartDate"): "Edm.String",
    ("Job", "JobId"): "Edm.Guid", ("Job", "Scheduled"): "Edm.Boolean", ("Job", "NextRun"): "Edm.DateTimeOffset",
    ("Task", "TaskId"): "Edm.Int64", ("Task", "Index"): "Edm.Int32", ("Task", "LastRunRecords"): "Edm.Int64",
    ("User", "ExpiredIn"): "Edm.Int32", ("User", "UserId"): "Edm.Guid", ("User", "LastLogin"): "Edm.DateTimeOffset",
    ("History", "Id"): "Edm.Int64", ("History", "Runtime"): "Edm.Int64", ("History", "RecordsAffected"): "Edm.Int64",
    ("History", "RunId"): "Edm.Guid", ("History", "RunStartDate"): "Edm.DateTimeOffset",
    ("TaskHistory", "Id"): "Edm.Int64", ("Request", "Status"): "Edm.Int32", ("Request", "Id"): "Edm.Guid",
    ("Request", "Timestamp"): "Edm.DateTimeOffset", ("Connection", "LastTested"): "Edm.DateTimeOffset",
    ("Transformation", "Queries"): "Collection(Edm.String)",
}


async def test_metadata_document(api):
    response = await send(api, "GET", "$metadata")
    assert response.status == 200
    assert response.content_type == "application/xml"
    assert response.headers.getall("OData-Version") == ["4.0"]
    raw = await response.read()
    text = raw.decode("utf-8")
    root = etree.fromstring(raw)
    assert root.tag == f"{{{EDMX}}}Edmx" and root.get("Version") == "4.0"
    assert "Store." not in text and "OdataSync.Store" not in text, "private Store terms leak into $metadata"
    assert "getlogs" not in text.lower()

    schema = root.find("edmx:DataServices/e:Schema", NS)
    assert schema.get("Namespace") == "CData"
    included = {inc.get("Alias") for inc in root.iterfind("edmx:Reference/edmx:Include", NS)}
    included |= {inc.get("Namespace") for inc in root.iterfind("edmx:Reference/edmx:Include", NS)}
    entity_types = {el.get("Name"): el for el in schema.findall("e:EntityType", NS)}
    complex_types = {el.get("Name") for el in schema.findall("e:ComplexType", NS)}
    assert set(COMPUTED) <= set(entity_types)

    def resolves(type_name: str) -> bool:
        inner = type_name[len("Collection("):-1] if type_name.startswith("Collection(") else type_name
        if inner.startswith("Edm."):
            return inner in {"Edm.String", "Edm.Int32", "Edm.Int64", "Edm.Boolean", "Edm.DateTimeOffset", "Edm.Guid",
                             "Edm.Double", "Edm.Decimal", "Edm.Date", "Edm.TimeOfDay", "Edm.Binary", "Edm.Byte"}
        namespace, _, name = inner.rpartition(".")
        return namespace == "CData" and (name in entity_types or name in complex_types)

    for el in schema.iter(f"{{{EDM}}}Property", f"{{{EDM}}}NavigationProperty", f"{{{EDM}}}Parameter",
                          f"{{{EDM}}}ReturnType"):
        assert resolves(el.get("Type")), f"unresolved type {el.get('Type')} on {el.get('Name')}"
    for el in schema.iter(f"{{{EDM}}}Annotation"):
        alias = el.get("Term").rsplit(".", 1)[0]
        assert alias in included, f"annotation term {el.get('Term')} has no edmx:Reference"

    for name, et in entity_types.items():
        props = {p.get("Name"): p for p in et.findall("e:Property", NS)}
        refs = et.findall("e:Key/e:PropertyRef", NS)
        assert refs, f"{name} has no key"
        for ref in refs:
            assert ref.get("Name") in props and props[ref.get("Name")].get("Nullable") == "false"
        computed = {p.get("Name") for p in props.values()
                    if p.find("e:Annotation[@Term='Core.Computed']", NS) is not None}
        assert COMPUTED[name] <= computed, f"{name}: Core.Computed missing on {COMPUTED[name] - computed}"
        for prop in ("Created", "Modified"):
            if prop in props:
                assert props[prop].get("Type") == "Edm.DateTimeOffset"
    for (type_name, prop), expected in TYPES.items():
        el = entity_types[type_name].find(f"e:Property[@Name='{prop}']", NS)
        assert el is not None and el.get("Type") == expected, (type_name, prop)

    password = entity_types["User"].find("e:Property[@Name='Password']", NS)
    permission = password.find("e:Annotation[@Term='Core.Permissions']", NS)
    assert permission is not None and permission.get("EnumMember") == "Core.Permission/Write"

    container = schema.find("e:EntityContainer", NS)
    sets = {es.get("Name"): es for es in container.findall("e:EntitySet", NS)}
    assert list(sets) == SETS
    for set_name, es in sets.items():
        type_name = es.get("EntityType")
        assert type_name.startswith("CData.") and type_name[6:] in entity_types
        navs = {n.get("Name"): n for n in entity_types[type_name[6:]].findall("e:NavigationProperty", NS)}
        bindings = {b.get("Path"): b.get("Target") for b in es.findall("e:NavigationPropertyBinding", NS)}
        assert set(bindings) == set(navs), f"{set_name}: bindings {bindings} for navigations {set(navs)}"
        for path, target in bindings.items():
            assert target in sets
            nav_type = navs[path].get("Type")
            inner = nav_type[len("Collection("):-1] if nav_type.startswith("Collection(") else nav_type
            assert sets[target].get("EntityType") == inner
    imports = {ai.get("Name"): ai.get("Action") for ai in container.findall("e:ActionImport", NS)}
    for name in ("ExecuteJob", "CreateUsers", "ResetAuthToken", "GetJobStatus"):
        assert imports.get(name) == f"CData.{name}"
    assert schema.find("e:Annotations[@Target='CData.Service']/e:Annotation[@Term='Capabilities.FilterFunctions']",
                       NS) is not None


# ---- addressing: keys, properties, navigation ----------------------------------------------------------------


async def test_key_forms(api):
    await seed_connections(api)
    for name in ("My Job", "O'Brien's", "a/b", "Über-Jöb ✓ 日本"):
        await make_job(api, name)
    cases = {
        "Jobs('My%20Job')": "My Job",
        "Jobs(JobName='My%20Job')": "My Job",
        "jobs(My%20Job)": "My Job",
        "JOBS(jobname='My%20Job')": "My Job",
        "Jobs('O''Brien''s')": "O'Brien's",
        "Jobs('O%27%27Brien%27%27s')": "O'Brien's",
        "Jobs('a%2Fb')": "a/b",
        "Jobs('a%2fb')": "a/b",
        "Jobs('%C3%9Cber-J%C3%B6b%20%E2%9C%93%20%E6%97%A5%E6%9C%AC')": "Über-Jöb ✓ 日本",
    }
    for path, expected in cases.items():
        response = await send(api, "GET", path)
        body = await read_json(response)
        assert response.status == 200, (path, body)
        assert body["JobName"] == expected, path
        assert body["@odata.context"].endswith("$metadata#Jobs/$entity"), path
    # Key values are case-sensitive.
    await expect_error(await send(api, "GET", "Jobs('my%20job')"), 404)
    # The Location of an entity whose key holds a '/' and a quote can be followed.
    created = await send(api, "POST", "Jobs", json_body={"JobName": "x/y'z", "Source": "src", "Destination": "dst"})
    assert created.status == 201
    location = created.headers["Location"]
    assert "x%2Fy" in location and unquote(location).endswith("/api.rsc/Jobs('x/y''z')"), location
    follow = await send(api, "GET", location[location.index("/api.rsc/"):])
    assert follow.status == 200 and (await read_json(follow))["JobName"] == "x/y'z"


async def test_property_and_value(api):
    await seed_connections(api)
    await make_job(api, "x")
    body = await api.ok("GET", "Jobs('x')/Source")
    assert list(body) == ["@odata.context", "value"]
    assert body["@odata.context"].endswith("$metadata#Jobs('x')/Source") and body["value"] == "src"
    response = await send(api, "GET", "Jobs('x')/Source/$value")
    assert response.status == 200 and response.content_type == "text/plain" and await response.text() == "src"
    response = await send(api, "GET", "Jobs('x')/Scheduled/$value")
    assert await response.text() == "false"
    response = await send(api, "GET", "Jobs('x')/Created/$value")
    assert response.status == 200 and (await response.text()).endswith("Z")
    for path in ("Jobs('x')/ScheduledCron", "Jobs('x')/ScheduledCron/$value"):
        response = await send(api, "GET", path)
        assert response.status == 204, path
        assert await response.read() == b""
    await expect_error(await send(api, "GET", "Jobs('x')/NoSuchProperty"), 404)
    await expect_error(await send(api, "GET", "Jobs('missing')/Source"), 404)


async def test_navigation(api, runtime):
    await seed_connections(api)
    await make_job(api, "x", **{"Query#1": "REPLICATE [a]", "Query#2": "REPLICATE [b]"})
    await make_job(api, "y", **{"Query#1": "REPLICATE [c]"})
    await insert_history(runtime, "x")
    await insert_history(runtime, "x", status="FAILED")
    await insert_history(runtime, "y")

    tasks = await api.ok("GET", "Jobs('x')/Tasks")
    assert tasks["@odata.context"].endswith("$metadata#Tasks")
    assert [t["TaskId"] for t in tasks["value"]] == [1, 2]
    job = await api.ok("GET", "Tasks(3)/Job")
    assert job["JobName"] == "y" and job["@odata.context"].endswith("$metadata#Jobs/$entity")
    history = await api.ok("GET", "Jobs('x')/History?$orderby=Status")
    assert history["@odata.context"].endswith("$metadata#History")
    assert [h["Status"] for h in history["value"]] == ["FAILED", "SUCCESS"]
    assert all(h["JobName"] == "x" for h in history["value"])
    assert (await api.ok("GET", "Jobs('x')/Tasks(2)"))["Query"] == "REPLICATE [b]"
    assert await api.ok("GET", "Jobs('x')/Tasks/$count") == "2"
    await expect_error(await send(api, "GET", "Jobs('x')/Tasks(3)"), 404)  # task 3 belongs to y
    # Run history: History -> TaskHistory -> History -> Job.
    table = runtime.store.table("TaskHistory")
    async with runtime.store.engine.begin() as conn:
        await conn.execute(table.insert().values(RunId=str(uuid.uuid4()), HistoryId=2, JobName="x", TaskId=1,
                                                 Status="FAILED"))
    task_runs = await api.ok("GET", "History(2)/Tasks")
    assert task_runs["@odata.context"].endswith("$metadata#TaskHistory")
    assert [(t["HistoryId"], t["Status"]) for t in task_runs["value"]] == [(2, "FAILED")]
    run = await api.ok("GET", "TaskHistory(1)/History?$select=Id,Status")
    assert (run["Id"], run["Status"]) == (2, "FAILED")
    assert (await api.ok("GET", "History(2)/Job"))["JobName"] == "x"
    body = await api.ok("GET", "Jobs?$filter=" + q("History/any(h: h/Status eq 'FAILED')") + "&$select=JobName")
    assert names(body) == ["x"]
    await expect_error(await send(api, "GET", "Jobs('nope')/Tasks"), 404)


async def test_count_segment(api, runtime):
    await seed_jobs(api, runtime)
    response = await send(api, "GET", "Jobs/$count?$filter=" + q("Verbosity ge 2"))
    assert response.status == 200 and response.content_type == "text/plain"
    assert await response.text() == "3"
    assert await api.ok("GET", "Jobs/$count") == "4"
    assert await api.ok("GET", "Tasks/$count?$filter=" + q("JobName eq 'alpha'")) == "3"


# ---- $filter ----------------------------------------------------------------------------------------------------

FILTERS = {
    # comparison and logical operators
    "JobName eq 'alpha'": {"alpha"},
    "JobName ne 'alpha'": {"beta", "Gamma Job", "delta"},
    "BatchSize gt 100": {"beta", "Gamma Job"},
    "BatchSize ge 250": {"beta", "Gamma Job"},
    "BatchSize lt 250": {"alpha"},
    "BatchSize le 250": {"alpha", "beta"},
    "Verbosity ge 2 and Verbosity le 3": {"beta", "Gamma Job"},
    "Verbosity eq 1 or Verbosity eq 4": {"alpha", "delta"},
    "not (Verbosity eq 1)": {"beta", "Gamma Job", "delta"},
    "Verbosity eq 1 or Verbosity eq 2 and Scheduled eq true": {"alpha", "beta"},
    "(Verbosity eq 1 or Verbosity eq 2) and Scheduled eq true": {"beta"},
    "Scheduled eq true": {"beta"},
    "Scheduled": {"beta"},
    "not Scheduled": {"alpha", "Gamma Job", "delta"},
    # null
    "BatchSize eq null": {"delta"},
    "BatchSize ne null": {"alpha", "beta", "Gamma Job"},
    "null eq BatchSize": {"delta"},
    "TableNamePrefix eq null": {"beta"},
    "ScheduledCron ne null": {"beta"},
    "BatchSize gt null": set(),
    # arithmetic
    "BatchSize add 50 eq 150": {"alpha"},
    "BatchSize sub 50 eq 200": {"beta"},
    "BatchSize mul 2 eq 1000": {"Gamma Job"},
    "BatchSize div 100 eq 2": {"beta"},
    "BatchSize mod 200 eq 50": {"beta"},
    "-BatchSize lt -200": {"beta", "Gamma Job"},
    "Verbosity add BatchSize eq 503": {"Gamma Job"},
    # in
    "Verbosity in (1, 3)": {"alpha", "Gamma Job"},
    "JobName in ('alpha', 'delta', 'nope')": {"alpha", "delta"},
    "JobName in ('beta')": {"beta"},  # OData's one-item list
    "JobName in ( 'beta' ) or Verbosity in (3)": {"beta", "Gamma Job"},
    # lambdas on the Tasks navigation
    "Tasks/any(t: t/Query eq 'REPLICATE [b]')": {"alpha", "delta"},
    "Tasks/any(t: t/Index gt 1)": {"alpha"},
    "Tasks/any()": {"alpha", "beta", "delta"},
    "not Tasks/any()": {"Gamma Job"},
    "Tasks/all(t: contains(t/Query, '[b]'))": {"Gamma Job", "delta"},
    # string functions
    "contains(JobName, 'a J')": {"Gamma Job"},
    "startswith(JobName, 'al')": {"alpha"},
    "endswith(JobName, 'ta')": {"beta", "delta"},
    "tolower(JobName) eq 'gamma job'": {"Gamma Job"},
    "toupper(JobName) eq 'ALPHA'": {"alpha"},
    "length(JobName) eq 4": {"beta"},
    "indexof(JobName, 'ta') eq 3": {"delta"},
    "substring(JobName, 1) eq 'lpha'": {"alpha"},
    "substring(JobName, 0, 2) eq 'de'": {"delta"},
    "concat(JobName, '!') eq 'beta!'": {"beta"},
    "concat(concat(JobName, '-'), Source) eq 'alpha-src'": {"alpha"},
    "trim(TableNamePrefix) eq 'pad'": {"Gamma Job"},
    # date/time functions and literals
    "year(Created) eq 2021": {"alpha"},
    "month(Created) eq 11": {"beta"},
    "day(Created) eq 31": {"delta"},
    "hour(Created) eq 13": {"beta"},
    "minute(Created) eq 6": {"alpha"},
    "second(Created) eq 59": {"delta"},
    "date(Created) eq 2023-01-01": {"Gamma Job"},
    "Created gt 2020-01-01": {"alpha", "beta", "Gamma Job"},
    "Created lt 2020-01-01T00:00:00Z": {"delta"},
    "Created ge 2022-11-12T13:14:15Z": {"beta", "Gamma Job"},
    "Created gt 2021-03-04T06:06:07+01:00": {"beta", "Gamma Job"},
    # math functions
    "round(BatchSize mul 0.005) eq 1": {"alpha", "beta"},
    "floor(BatchSize mul 0.01) eq 2": {"beta"},
    "ceiling(BatchSize mul 0.01) eq 3": {"beta"},
}


async def test_filter_operators_and_functions(api, runtime):
    await seed_jobs(api, runtime)
    failures = []
    for expression, expected in FILTERS.items():
        response = await send(api, "GET", "Jobs?$select=JobName&$filter=" + q(expression))
        body = await read_json(response)
        if response.status != 200:
            failures.append(f"{expression!r}: HTTP {response.status} {body}")
        elif set(names(body)) != expected:
            failures.append(f"{expression!r}: got {sorted(names(body))}, expected {sorted(expected)}")
    assert not failures, "\n".join(failures)


async def test_filter_on_tasks_coercion_and_paths(api, runtime):
    await seed_jobs(api, runtime)
    cases = {
        "TaskId eq '2'": [2],  # a string literal for an Int64 key, as CData clients send it
        "TaskId eq 2": [2],
        "TaskId in ('1', '3')": [1, 3],
        "TaskId gt '3'": [4, 5],
        "Job/Verbosity eq 1": [1, 2, 3],  # a single-valued navigation path
        "Job/JobName eq 'delta' and Index eq 1": [5],
    }
    for expression, expected in cases.items():
        body = await api.ok("GET", "Tasks?$select=TaskId&$orderby=TaskId&$filter=" + q(expression))
        assert [t["TaskId"] for t in body["value"]] == expected, expression


# ---- $select, $orderby, $top, $skip, $count, $expand, $search -----------------------------------------------


async def test_select_orderby_top_skip_count(api, runtime):
    await seed_jobs(api, runtime)
    body = await api.ok("GET", "Jobs?$select=JobName,Verbosity&$orderby=JobName")
    assert body["@odata.context"].endswith("$metadata#Jobs(JobName,Verbosity)")
    assert all(set(row) == {"@odata.etag", "JobName", "Verbosity"} for row in body["value"])
    body = await api.ok("GET", "Jobs('alpha')?$select=Source")
    assert body["@odata.context"].endswith("$metadata#Jobs(Source)/$entity") and body["Source"] == "src"
    assert "Destination" not in body
    body = await api.ok("GET", "Jobs?$select=*")
    assert "Destination" in body["value"][0] and body["@odata.context"].endswith("$metadata#Jobs")

    # Several keys, mixed directions; nulls sort first ascending.
    body = await api.ok("GET", "Jobs?$select=JobName&$orderby=" + q("Scheduled desc,BatchSize asc"))
    assert names(body) == ["beta", "delta", "alpha", "Gamma Job"]
    body = await api.ok("GET", "Jobs?$select=JobName&$orderby=" + q("CommandTimeout desc,JobName desc"))
    assert names(body) == ["Gamma Job", "alpha", "delta", "beta"]
    body = await api.ok("GET", "Jobs?$select=JobName&$orderby=" + q("length(JobName),JobName"))
    assert names(body) == ["beta", "alpha", "delta", "Gamma Job"]

    body = await api.ok("GET", "Jobs?$select=JobName&$orderby=Verbosity&$top=2&$skip=1&$count=true")
    assert names(body) == ["beta", "Gamma Job"]
    assert list(body) == ["@odata.context", "@odata.count", "value"]
    assert body["@odata.count"] == 4
    body = await api.ok("GET", "Jobs?$top=0&$count=true&$filter=" + q("Verbosity gt 1"))
    assert body["value"] == [] and body["@odata.count"] == 3
    body = await api.ok("GET", "Jobs?$skip=10")
    assert body["value"] == []


async def test_expand(api, runtime):
    await seed_jobs(api, runtime)
    await insert_history(runtime, "alpha")
    body = await api.ok("GET", "Jobs?$expand=Tasks&$orderby=JobName")
    assert body["@odata.context"].endswith("$metadata#Jobs"), "4.0 context: no (Tasks()) with $expand alone"
    by_name = {row["JobName"]: row for row in body["value"]}
    assert [t["Query"] for t in by_name["alpha"]["Tasks"]] == ["REPLICATE [a]", "REPLICATE [b]", "REPLICATE [c]"]
    assert by_name["Gamma Job"]["Tasks"] == []

    nested = "Tasks($select=Query;$filter=Index gt 1;$orderby=Index desc;$top=1;$count=true)"
    body = await api.ok("GET", "Jobs('alpha')?$expand=" + q(nested))
    assert body["Tasks@odata.count"] == 2
    assert [t["Query"] for t in body["Tasks"]] == ["REPLICATE [c]"]

    body = await api.ok("GET", "Jobs?$filter=" + q("JobName eq 'alpha'") + "&$expand=*")
    row = body["value"][0]
    assert len(row["Tasks"]) == 3 and len(row["History"]) == 1

    body = await api.ok("GET", "Tasks?$filter=" + q("TaskId eq 4") + "&$expand=" + q("Job($select=JobName,Verbosity)"))
    job = body["value"][0]["Job"]
    assert job["JobName"] == "beta" and job["Verbosity"] == 2 and "Source" not in job

    body = await api.ok("GET", "Tasks(1)?$expand=" + q("Job($expand=Tasks($select=TaskId;$orderby=TaskId desc))"))
    assert [t["TaskId"] for t in body["Job"]["Tasks"]] == [3, 2, 1]

    body = await api.ok("GET", "Jobs?$select=JobName&$expand=" + q("Tasks($select=Query)"))
    assert body["@odata.context"].endswith("$metadata#Jobs(JobName,Tasks(Query))")


async def test_search(api, runtime):
    await seed_jobs(api, runtime)
    cases = {
        "gamma": {"Gamma Job"},
        "GAMMA": {"Gamma Job"},
        '"Gamma Job"': {"Gamma Job"},
        '"Job Gamma"': set(),
        "alpha OR beta": {"alpha", "beta"},
        "alpha AND beta": set(),
        "(alpha OR delta) AND (gamma OR delta)": {"delta"},
    }
    for expression, expected in cases.items():
        body = await api.ok("GET", "Jobs?$select=JobName&$search=" + q(expression))
        assert set(names(body)) == expected, expression
    assert await api.ok("GET", "Jobs/$count?$search=" + q("alpha OR beta")) == "2"


async def test_search_not(api, runtime):
    await seed_jobs(api, runtime)
    cases = {
        "NOT alpha": {"beta", "Gamma Job", "delta"},
        "(alpha OR delta) AND NOT delta": {"alpha"},
    }
    for expression, expected in cases.items():
        body = await api.ok("GET", "Jobs?$select=JobName&$search=" + q(expression))
        assert set(names(body)) == expected, expression


# ---- formats, headers, context URLs -------------------------------------------------------------------------


async def test_formats_and_metadata_levels(api, runtime):
    await seed_jobs(api, runtime)
    response = await send(api, "GET", "Jobs('alpha')?$format=json")
    assert response.status == 200 and response.content_type == "application/json"
    assert "odata.metadata=minimal" in response.headers["Content-Type"]
    minimal = await read_json(response)
    assert _first_key(minimal) == "@odata.context" and minimal["@odata.etag"] == response.headers["ETag"]
    assert minimal["Created"].endswith("Z") and minimal["Modified"].endswith("Z")

    for path, headers in (("Jobs('alpha')?$format=" + q("application/json;odata.metadata=full"), {}),
                          ("Jobs('alpha')", {"Accept": "application/json;odata.metadata=full"})):
        response = await send(api, "GET", path, headers=headers)
        assert "odata.metadata=full" in response.headers["Content-Type"]
        full = await read_json(response)
        assert _first_key(full) == "@odata.context"
        assert full["@odata.type"] == "#CData.Job"
        assert full["@odata.id"].endswith("/api.rsc/Jobs('alpha')") and full["@odata.id"].startswith("http")
        assert full["@odata.editLink"] == full["@odata.id"]
        assert full["Created@odata.type"] == "#DateTimeOffset"

    for path, headers in (("Jobs?$count=true&$format=" + q("json;odata.metadata=none"), {}),
                          ("Jobs?$count=true", {"Accept": "application/json;odata.metadata=none"})):
        response = await send(api, "GET", path, headers={"Prefer": "odata.maxpagesize=1", **headers})
        none = await read_json(response)
        assert "@odata.context" not in none and "@odata.etag" not in none["value"][0]
        assert none["@odata.count"] == 4 and "@odata.nextLink" in none, "count and nextLink survive metadata=none"

    # IEEE754Compatible=true: Int64 values and counts as strings, Int32 stays a number.
    response = await send(api, "GET", "Tasks?$count=true&$orderby=TaskId",
                          headers={"Accept": "application/json;IEEE754Compatible=true"})
    assert "IEEE754Compatible=true" in response.headers["Content-Type"]
    body = await read_json(response)
    assert body["@odata.count"] == "5"
    assert body["value"][0]["TaskId"] == "1" and body["value"][0]["Index"] == 1
    response = await send(api, "GET", "Tasks(1)?$format=" + q("application/json;IEEE754Compatible=true"))
    assert (await read_json(response))["TaskId"] == "1"
    ieee = {"Accept": "application/json;IEEE754Compatible=true"}
    response = await send(api, "GET", "Jobs('alpha')?$expand=" + q("Tasks($count=true;$top=1)"), headers=ieee)
    body = await read_json(response)
    assert body["Tasks"][0]["TaskId"] == "1" and body["Tasks@odata.count"] == "3" and body["BatchSize"] == 100
    body = await read_json(await send(api, "GET", "Tasks(1)/TaskId", headers=ieee))
    assert body["value"] == "1"
    body = await api.ok("GET", "Tasks?$orderby=TaskId")
    assert body["value"][0]["TaskId"] == 1

    # Power Query's Accept list gets JSON with minimal metadata.
    response = await send(api, "GET", "Jobs", headers={"Accept": POWER_QUERY_ACCEPT, "OData-MaxVersion": "4.0",
                                                       "MaxDataServiceVersion": "3.0"})
    assert response.status == 200 and response.content_type == "application/json"
    assert "odata.metadata=minimal" in response.headers["Content-Type"]
    assert response.headers.getall("OData-Version") == ["4.0"]
    assert len((await read_json(response))["value"]) == 4
    response = await send(api, "GET", "Jobs", headers={"Accept": "*/*"})
    assert response.status == 200 and response.content_type == "application/json"


async def test_context_urls_and_single_version_header(api, runtime):
    await seed_jobs(api, runtime)
    expectations = {
        "Jobs": "#Jobs",
        "jobs?$expand=tasks": "#Jobs",
        "Jobs?$select=jobname": "#Jobs(JobName)",
        "Jobs('alpha')": "#Jobs/$entity",
        "Jobs('alpha')?$expand=Tasks": "#Jobs/$entity",
        "Jobs('alpha')/Tasks": "#Tasks",
        "Jobs('alpha')/Source": "#Jobs('alpha')/Source",
        "Tasks('alpha')": "#Tasks",
        "": "",
    }
    for path, fragment in expectations.items():
        response = await send(api, "GET", path)
        body = await read_json(response)
        assert response.status == 200, (path, body)
        assert response.headers.getall("OData-Version") == ["4.0"], path
        assert _first_key(body) == "@odata.context", path
        assert body["@odata.context"].startswith("http://"), path
        assert body["@odata.context"].endswith("/api.rsc/$metadata" + fragment), (path, body["@odata.context"])
    for path in ("Jobs/$count", "Jobs('nope')", "$metadata"):
        response = await send(api, "GET", path)
        assert response.headers.getall("OData-Version") == ["4.0"], path


async def test_case_insensitive_names(api, runtime):
    await seed_jobs(api, runtime)
    body = await api.ok("GET", "/api.rsc/jobs?$SELECT=jobname,VERBOSITY&$Filter=" + q("jobname eq 'alpha'"))
    assert body["value"] == [{"@odata.etag": body["value"][0]["@odata.etag"], "JobName": "alpha", "Verbosity": 1}]
    assert body["@odata.context"].endswith("$metadata#Jobs(JobName,Verbosity)")
    body = await api.ok("GET", "JOBS?$ORDERBY=" + q("batchsize DESC") + "&$TOP=1&$COUNT=true")
    assert names(body) == ["Gamma Job"] and body["@odata.count"] == 4
    body = await api.ok("GET", "jobs('alpha')/tasks?$filter=" + q("INDEX eq 2"))
    assert [t["Query"] for t in body["value"]] == ["REPLICATE [b]"]
    assert await api.ok("GET", "jobs('alpha')/source/$value") == "src"


async def test_query_string_forms(api, runtime):
    await seed_jobs(api, runtime)
    cases = {
        "Jobs?$filter=JobName+eq+%27Gamma+Job%27": {"Gamma Job"},  # '+' means a space (CData's client)
        "Jobs?$filter=JobName%20eq%20'alpha'": {"alpha"},  # raw quotes (@odata/client)
        "Jobs?%24filter=JobName%20eq%20%27beta%27": {"beta"},  # an encoded '$'
        "/api.rsc//jobs?$filter=JobName+eq+'delta'": {"delta"},  # a repeated slash
        "/api.rsc//Jobs('alpha')//Tasks?$select=TaskId": None,
    }
    for path, expected in cases.items():
        response = await send(api, "GET", path)
        body = await read_json(response)
        assert response.status == 200, (path, body)
        if expected is None:
            assert [t["TaskId"] for t in body["value"]] == [1, 2, 3]
        else:
            assert set(names(body)) == expected, path


async def test_unknown_custom_query_options_are_ignored(api):
    await seed_connections(api)
    await make_job(api, "alpha")
    for path in ("Jobs?$top=1", "Jobs('alpha')", "Jobs('alpha')/Source/$value", "$metadata", ""):
        response = await send(api, "GET", path + ("&" if "?" in path else "?") + "foo=bar&sap-client=100")
        assert response.status == 200, (path, await response.text())


async def test_nested_expand_three_levels(api, runtime):
    await seed_jobs(api, runtime)
    body = await api.ok("GET", "Jobs('delta')?$expand=" + q(nested_expand(3)))
    assert body["Tasks"][0]["Job"]["JobName"] == "delta"
    assert [t["TaskId"] for t in body["Tasks"][0]["Job"]["Tasks"]] == [5]


async def test_nested_expand_up_to_advertised_max_levels(api, runtime):
    await seed_jobs(api, runtime)
    body = await api.ok("GET", "Jobs('delta')?$expand=" + q(nested_expand(5)))
    assert body["Tasks"][0]["Job"]["Tasks"][0]["Job"]["Tasks"][0]["TaskId"] == 5
