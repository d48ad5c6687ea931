"""Bad input of every kind answers an OData error body with the right 4xx (or 501), quickly, never a 500 or a trace."""

from __future__ import annotations

import asyncio
import json
import time

from tests.api.helpers import expect_error, nested_expand, q, seed_connections, send
from tests.conftest import make_job

JSON = {"Content-Type": "application/json"}


async def _seed(api) -> None:
    await seed_connections(api)
    await make_job(api, "x", **{"Query#1": "REPLICATE [a]"})


async def _check_all(api, cases) -> None:
    """Run (method, path, status[, headers, data]) cases; report every mismatch at once."""
    failures = []
    for method, path, status, *rest in cases:
        headers = rest[0] if rest else None
        data = rest[1] if len(rest) > 1 else None
        response = await send(api, method, path, headers=headers, data=data)
        try:
            await expect_error(response, status)
        except (AssertionError, ValueError) as exc:
            failures.append(f"{method} {path[:120]}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)


async def test_resource_path_errors(api):
    await _seed(api)
    await _check_all(api, [
        ("GET", "NoSuchSet", 404),
        ("GET", "NoSuchSet('x')", 404),
        ("POST", "NoSuchAction", 404),
        ("GET", "Jobs('missing')", 404),
        ("GET", "Jobs('x')/NoSuchNavigation", 404),
        ("GET", "Jobs('x')/Tasks(1)/NoSuch", 404),
        ("GET", "/not-the-service", 404),
        ("GET", "Jobs('x')/$value", 400),
        ("GET", "Jobs('x')/$count", 400),
        ("GET", "Jobs('x')/Source/$count", 400),
        ("GET", "Jobs('abc)", 400),  # unterminated quote
        ("GET", "Jobs('O'Brien')", 400),  # an undoubled quote
        ("GET", "Jobs(Foo='x')", 400),  # unknown key name
        ("GET", "Jobs('a','b')", 400),  # two values for a one-part key
        ("GET", "Jobs(JobName='a',JobName='b')", 400),
        ("GET", "Jobs(JobName='a',Source='b')", 400),
        ("GET", "Jobs()", 400),
        ("GET", "Jobs('x'", 400),
        ("GET", "Tasks(99999999999999999999999)", 400),
        ("GET", "Tasks(1)/Job(1)", 400),  # a single-valued navigation takes no key
        ("GET", "Users('admin')/Password", 400),  # write-only
        ("GET", "$metadata/Jobs", 404),
        ("GET", "Jobs/$ref", 501),
    ])


async def test_query_option_errors(api):
    await _seed(api)
    await _check_all(api, [
        ("GET", "Jobs?$select=Nope", 400),
        ("GET", "Jobs?$select=JobName,", 400),
        ("GET", "Users?$select=Password", 400),
        ("GET", "Jobs?$filter=" + q("Nope eq 1"), 400),
        ("GET", "Jobs?$orderby=Nope", 400),
        ("GET", "Jobs?$orderby=" + q("JobName sideways"), 400),
        ("GET", "Jobs?$orderby=Tasks", 400),  # a collection navigation
        ("GET", "Jobs?$expand=Source", 400),  # not a navigation property
        ("GET", "Jobs?$expand=Nope", 400),
        ("GET", "Jobs?$expand=" + q("Tasks($nope=1)"), 400),
        ("GET", "Jobs?$expand=" + q("Tasks($select=Nope)"), 400),
        ("GET", "Jobs?$expand=" + q("Tasks($filter=Nope eq 1)"), 400),
        ("GET", "Jobs?$expand=" + q(nested_expand(10)), 400),
        ("GET", "Jobs?$top=-1", 400),
        ("GET", "Jobs?$top=abc", 400),
        ("GET", "Jobs?$top=1.5", 400),
        ("GET", "Jobs?$top=", 400),
        ("GET", "Jobs?$skip=-3", 400),
        ("GET", "Jobs?$skip=99999999999999999999", 400),
        ("GET", "Jobs?$top=99999999999999999999", 400),
        ("GET", "Jobs?$count=maybe", 400),
        ("GET", "Jobs?$top=1&$top=2", 400),  # a repeated system query option
        ("GET", "Jobs?$nope=1", 400),  # an unknown system query option
        ("GET", "Jobs?$skiptoken=" + q("AAAA.tampered"), 400),
        ("GET", "Jobs?$search=" + q("(alpha"), 400),
        ("GET", "Jobs?$search=" + q("alpha OR"), 400),
        ("GET", "Jobs?$search=", 400),
    ])


FILTER_SYNTAX_ERRORS = [
    "JobName eq",
    "JobName eq 'x",
    "(JobName eq 'x'",
    "JobName eq 'x')",
    "JobName eqq 'x'",
    "eq eq eq",
    "JobName eq 'x' and",
    'JobName eq "x"',
    "JobName eq 'x' JobName",
    "substringof('a', JobName)",  # V3, not V4
    "Created gt datetime'2020-01-01T00:00:00'",  # V3 literal
    "nosuchfunction(JobName) eq 1",
    "contains(JobName)",  # wrong argument count
    "JobName eq 1",  # a number where a string goes
    "Verbosity eq 'abc'",  # a string that is not a number
    "Scheduled eq 'perhaps'",
    "BatchSize div 0 eq 1",
    "Created gt 2020-13-45",
    "JobName add 1 eq 2",
    "Tasks/any(t: t/Nope eq 1)",
    "Tasks/all()",
    "Source/any(s: s eq 'x')",
    "Tasks eq null",
    "Verbosity",  # not a boolean expression
    "'just a string'",
    "",
]


async def test_filter_syntax_and_type_errors(api):
    await _seed(api)
    await _check_all(api, [("GET", "Jobs?$filter=" + q(f), 400) for f in FILTER_SYNTAX_ERRORS])


async def test_filter_size_limits_answer_quickly(api):
    await _seed(api)
    # ~2,000 expression nodes in a URL short enough for any HTTP server.
    terms = "+or+".join(f"Index+eq+{i}" for i in range(400))
    started = time.monotonic()
    await expect_error(await asyncio.wait_for(send(api, "GET", "Tasks?$filter=" + terms), 10), 400)
    nested = "not (" * 300 + "Index eq 1" + ")" * 300
    await expect_error(await asyncio.wait_for(send(api, "GET", "Tasks?$filter=" + q(nested)), 10), 400)
    assert time.monotonic() - started < 5


async def test_filter_of_5000_or_terms(api):
    await _seed(api)
    terms = "%20or%20".join(f"BatchSize%20eq%20{i}" for i in range(5000))
    started = time.monotonic()
    response = await asyncio.wait_for(send(api, "GET", "Jobs?$filter=" + terms), 10)
    assert time.monotonic() - started < 5
    await expect_error(response, 400)


async def test_body_errors(api):
    await _seed(api)
    post = "Jobs"
    await _check_all(api, [
        ("POST", post, 400, JSON, b"{not json"),
        ("POST", post, 400, JSON, b'{"JobName": "y", "Source": "src", "Destination": "dst",}'),
        ("POST", post, 400, JSON, '{"JobName": "\xe9t\xe9"}'.encode("latin-1")),  # not UTF-8
        ("POST", post, 400, JSON, b'["JobName"]'),  # not an object
        ("POST", post, 400, JSON, b'"text"'),
        ("POST", post, 400, JSON, b""),
        ("POST", post, 400, JSON, b'{"JobName": "y", "BatchSize": NaN}'),
        ("POST", post, 400, JSON, b'{"JobName": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("POST", post, 400, JSON, json.dumps({"JobName": "y", "Source": "src", "Destination": "dst",
                                              "BatchSize": 10**30}).encode()),
        ("POST", post, 400, JSON, json.dumps({"JobName": "y", "Source": "src", "Destination": "dst",
                                              "BatchSize": 2**31}).encode()),
        ("POST", post, 400, JSON, json.dumps({"JobName": "y", "Source": "src", "Destination": "dst",
                                              "Nope": 1}).encode()),
        ("POST", post, 400, JSON, json.dumps({"JobName": "y", "Source": "missing", "Destination": "dst"}).encode()),
        ("POST", post, 415, {"Content-Type": "text/plain"}, b'{"JobName": "y"}'),
        ("POST", post, 415, {"Content-Type": "application/x-www-form-urlencoded"}, b"JobName=y"),
        ("POST", post, 415, {"Content-Type": "application/xml"}, b"<Job/>"),
        ("PATCH", "Jobs('x')", 415, {"Content-Type": "text/plain"}, b'{"Verbosity": 1}'),
        ("PATCH", "Jobs('x')", 400, JSON, b'{"Verbosity": "loud"}'),
        ("PATCH", "Jobs('x')", 400, JSON, b'{"Nope": 1}'),
        ("POST", "CreateUsers", 400, JSON, b'{"Nope": 1}'),
        ("POST", "CreateUsers", 400, JSON, b"{broken"),
    ])
    assert await api.ok("GET", "Jobs/$count") == "1", "nothing was created"


async def test_oversized_body_is_413(api):
    await _seed(api)
    body = b'{"JobName": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    response = await send(api, "POST", "Jobs", headers=JSON, data=body)
    error = await expect_error(response, 413)
    assert "x" * 100 not in error["message"]


async def test_method_errors(api):
    await _seed(api)
    cases = [
        ("GET", "ExecuteJob", "POST"),
        ("GET", "CreateUsers", "POST"),
        ("DELETE", "ResetAuthToken", "POST"),
        ("POST", "Jobs('x')", None),
        ("POST", "Jobs('x')/Source", None),
        ("DELETE", "Jobs", None),
        ("PATCH", "Jobs", None),
        ("PUT", "Jobs", None),
        ("DELETE", "Jobs('x')/Tasks", None),
        ("POST", "History", None),
        ("PATCH", "History(1)", None),
        ("DELETE", "TaskHistory(1)", None),
        ("POST", "", None),
        ("DELETE", "$metadata", None),
        ("TRACE", "Jobs", None),
    ]
    failures = []
    for method, path, allowed in cases:
        response = await send(api, method, path, headers=JSON,
                              data=b"{}" if method in ("POST", "PATCH", "PUT") else None)
        try:
            await expect_error(response, 405)
            assert response.headers.get("Allow"), "a 405 carries Allow"
            if allowed:
                assert response.headers["Allow"] == allowed
        except AssertionError as exc:
            failures.append(f"{method} {path}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)


async def test_format_errors(api):
    await _seed(api)
    await _check_all(api, [
        ("GET", "Jobs?$format=xml", 406),
        ("GET", "Jobs?$format=atom", 406),
        ("GET", "Jobs('x')?$format=" + q("application/xml"), 406),
        ("GET", "Jobs", 406, {"Accept": "application/xml"}),
        ("GET", "Jobs", 406, {"Accept": "application/atom+xml"}),
        ("GET", "Jobs('x')", 406, {"Accept": "text/html"}),
        ("GET", "Jobs", 406, {"Accept": "application/json;odata.metadata=verbose"}),
        ("GET", "Jobs", 400, {"Accept": "application/json;IEEE754Compatible=perhaps"}),
        ("GET", "Jobs", 400, {"OData-MaxVersion": "3.0"}),
    ])


async def test_unsupported_features_are_501(api):
    await _seed(api)
    await _check_all(api, [
        ("GET", "Jobs?$apply=" + q("aggregate($count as N)"), 501),
        ("GET", "Jobs?$apply=" + q("groupby((Source))"), 501),
        ("GET", "Jobs?$compute=" + q("BatchSize mul 2 as Double"), 501),
        ("GET", "Jobs?$expand=Tasks&$levels=2", 501),
        ("POST", "$batch", 501, {"Content-Type": "multipart/mixed;boundary=b1"},
         b"--b1\r\nContent-Type: application/http\r\n\r\nGET Jobs HTTP/1.1\r\n\r\n--b1--\r\n"),
        ("GET", "Jobs?$filter=" + q("geo.distance(Source, Destination) lt 1"), 501),
        ("GET", "Jobs?$filter=" + q("isof(JobName, Edm.String)"), 501),
        ("GET", "Jobs?$filter=" + q("cast(BatchSize, Edm.String) eq '1'"), 501),
    ])


async def test_parameter_aliases_are_supported_or_501(api):
    await _seed(api)
    response = await send(api, "GET", "Jobs?$filter=" + q("Source eq @s") + "&@s=" + q("'src'"))
    if response.status != 200:
        await expect_error(response, 501)


async def test_errors_on_every_method_carry_no_trace(api):
    """A sample of failing writes: the body is the OData error object and nothing else."""
    await _seed(api)
    for method in ("POST", "PATCH", "PUT"):
        path = "Jobs" if method == "POST" else "Jobs('x')"
        response = await send(api, method, path, headers=JSON, data=b'{"Verbosity": {"deep": [1, 2, {"x": null}]}}')
        error = await expect_error(response, 400)
        assert "Verbosity" in error["message"]


async def test_integer_literal_overflow_in_filter(api):
    await _seed(api)
    await _check_all(api, [
        ("GET", "Tasks?$filter=" + q("TaskId eq 9223372036854775808"), 400),
        ("GET", "Jobs?$filter=" + q("BatchSize eq 99999999999999999999"), 400),
        ("GET", "Jobs?$filter=" + q("BatchSize eq -9223372036854775809"), 400),
    ])


async def _statuses(api, cases) -> list[str]:
    failures = []
    for method, path, body, allowed in cases:
        response = await send(api, method, path, json_body=body)
        if response.status not in allowed:
            failures.append(f"{method} {path}: {response.status} {(await response.text())[:200]}")
        elif response.status >= 400:
            await expect_error(response, response.status)
    return failures


async def test_values_the_store_cannot_hold_are_not_500(api, request):
    await _seed(api)
    failures = await _statuses(api, [
        ("POST", "Jobs", {"JobName": "nul", "Source": "src", "Destination": "dst", "TableNamePrefix": "a\u0000b"},
         (201, 400)),
        ("POST", "Tasks", {"JobName": "x", "Query": "REPLICATE [a\u0000]"}, (201, 400)),
        ("GET", "Jobs?$filter=" + q("JobName eq 'a\u0000b'"), None, (200, 400)),
        ("GET", "Jobs('a%00b')", None, (400, 404)),
    ])
    assert not failures, "\n".join(failures)


async def test_runtime_arithmetic_errors_are_not_500(api, request):
    await _seed(api)
    await send(api, "PATCH", "Jobs('x')", json_body={"BatchSize": 10})
    failures = await _statuses(api, [
        ("GET", "Jobs?$filter=" + q("Verbosity add 2147483647 gt 0"), None, (200, 400)),
        ("GET", "Jobs?$filter=" + q("BatchSize mul 99999999999 mul 99999999999 gt 1"), None, (200, 400)),
        ("GET", "Jobs?$filter=" + q("substring(JobName, 0, -1) eq 'x'"), None, (200, 400)),
        ("GET", "Jobs?$filter=" + q("substring(JobName, 99999999999) eq 'x'"), None, (200, 400)),
    ])
    assert not failures, "\n".join(failures)


async def test_count_of_a_navigation_in_filter(api):
    await _seed(api)
    response = await send(api, "GET", "Jobs?$filter=" + q("Tasks/$count ge 1"))
    if response.status != 200:
        await expect_error(response, 501)
