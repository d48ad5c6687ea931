"""Server-driven paging: page sizes, absolute next links that keep the query, keyset stability, $top across pages."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from odata_sync.app import build_app, create_runtime
from tests.api.helpers import expect_error, names, q, read_json, seed_connections, send
from tests.conftest import Api, make_job

MAX = {"Prefer": "odata.maxpagesize=10"}


async def _jobs(api: Api, count: int = 25) -> list[str]:
    """job01..jobNN; every fifth has Verbosity 3, every third has no BatchSize."""
    await seed_connections(api)
    created = []
    for i in range(1, count + 1):
        name = f"job{i:02d}"
        extra = {"Verbosity": 3 if i % 5 == 0 else 2}
        if i % 3:
            extra["BatchSize"] = 100 * (i % 4 + 1)
        await make_job(api, name, **extra)
        created.append(name)
    return created


def _relative(link: str) -> str:
    assert link.startswith("http://") and "/api.rsc/" in link, link
    return link[link.index("/api.rsc/"):]


async def _follow(api: Api, path: str, headers: dict | None = None, key: str = "JobName") -> tuple[list, list[dict]]:
    """Follow @odata.nextLink from ``path``; return every row's ``key`` and each page's body."""
    rows, pages = [], []
    link = path
    for _ in range(50):
        response = await send(api, "GET", link, headers=headers)
        body = await read_json(response)
        assert response.status == 200, (link, body)
        pages.append(body)
        rows += [row[key] for row in body["value"]]
        if "@odata.nextLink" not in body:
            return rows, pages
        link = _relative(body["@odata.nextLink"])
    raise AssertionError("more than 50 pages")


@pytest.fixture
async def small_page_api(aiohttp_client, config) -> Api:
    """The app configured with a server page size of 5."""
    runtime = await create_runtime(dataclasses.replace(config, max_page_size=5))
    return Api(await aiohttp_client(build_app(runtime)))


async def test_maxpagesize_preference_and_next_links(api):
    created = await _jobs(api)
    query = "Jobs?$filter=" + q("Verbosity eq 2") + "&$select=JobName,Verbosity&$orderby=" + q("JobName desc")
    response = await send(api, "GET", query, headers=MAX)
    assert response.status == 200
    assert "odata.maxpagesize=10" in response.headers.get("Preference-Applied", "")
    first = await read_json(response)
    assert len(first["value"]) == 10
    link = first["@odata.nextLink"]
    assert link.startswith("http://") and "/api.rsc/Jobs?" in link
    params = {k.lower(): v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert params["$filter"] == "Verbosity eq 2"
    assert params["$select"] == "JobName,Verbosity"
    assert params["$orderby"] == "JobName desc"
    assert params["$skiptoken"]

    rows, pages = await _follow(api, query, MAX)
    expected = sorted((n for i, n in enumerate(created, start=1) if i % 5), reverse=True)
    assert rows == expected, "every row exactly once, in order"
    assert [len(p["value"]) for p in pages] == [10, 10]
    assert all(set(row) == {"@odata.etag", "JobName", "Verbosity"} for p in pages for row in p["value"])
    assert all(p["@odata.context"].endswith("$metadata#Jobs(JobName,Verbosity)") for p in pages)


async def test_server_default_page_size(small_page_api):
    api = small_page_api
    created = await _jobs(api, 12)
    response = await send(api, "GET", "Jobs?$select=JobName")
    assert "Preference-Applied" not in response.headers
    rows, pages = await _follow(api, "Jobs?$select=JobName")
    assert rows == created and [len(p["value"]) for p in pages] == [5, 5, 2]
    # A client may ask for less than the server's page size, never for more.
    _, pages = await _follow(api, "Jobs", {"Prefer": "odata.maxpagesize=3"})
    assert [len(p["value"]) for p in pages] == [3, 3, 3, 3]
    response = await send(api, "GET", "Jobs", headers={"Prefer": "odata.maxpagesize=100"})
    body = await read_json(response)
    assert len(body["value"]) == 5 and "@odata.nextLink" in body
    assert "odata.maxpagesize=100" not in response.headers.get("Preference-Applied", "")


async def test_top_skip_and_count_across_pages(api):
    created = await _jobs(api)
    rows, pages = await _follow(api, "Jobs?$top=23&$orderby=JobName", MAX)
    assert rows == created[:23] and [len(p["value"]) for p in pages] == [10, 10, 3]
    rows, pages = await _follow(api, "Jobs?$top=7", MAX)
    assert rows == created[:7] and len(pages) == 1
    rows, pages = await _follow(api, "Jobs?$top=20", MAX)
    assert rows == created[:20] and len(pages) == 2, "no link to an empty page when $top is reached"
    rows, _ = await _follow(api, "Jobs?$skip=3&$top=15&$orderby=" + q("JobName desc"), MAX)
    assert rows == created[::-1][3:18]
    rows, pages = await _follow(api, "Jobs?$expand=Tasks&$select=JobName&$filter=" + q("Verbosity eq 3"),
                                {"Prefer": "odata.maxpagesize=2"})
    assert len(pages) == 3 and all(row["Tasks"] == [] for page in pages for row in page["value"])
    rows, pages = await _follow(api, "Jobs?$count=true&$filter=" + q("Verbosity eq 3"), {"Prefer": "odata.maxpagesize=2"})
    assert rows == ["job05", "job10", "job15", "job20", "job25"]
    assert all(p["@odata.count"] == 5 for p in pages)


async def test_keyset_paging_with_nulls_and_descending_keys(api):
    await _jobs(api)
    everything = (await api.ok("GET", "Jobs?$select=JobName,BatchSize"))["value"]
    batch = {row["JobName"]: row["BatchSize"] for row in everything}
    assert None in batch.values()
    for orderby, reverse in (("BatchSize,JobName", False), ("BatchSize desc,JobName desc", True)):
        rows, _ = await _follow(api, "Jobs?$select=JobName,BatchSize&$orderby=" + q(orderby),
                                {"Prefer": "odata.maxpagesize=4"})
        # Nulls first ascending, last descending.
        expected = sorted(batch, key=lambda n: (batch[n] is not None, batch[n] or 0, n), reverse=reverse)
        assert rows == expected, orderby
    # Date/time and computed sort keys page the same way as one unpaged read.
    for orderby in ("Created desc", "tolower(JobName) desc", "Verbosity,BatchSize desc"):
        path = "Jobs?$select=JobName&$orderby=" + q(orderby)
        whole = names(await api.ok("GET", path))
        rows, pages = await _follow(api, path, {"Prefer": "odata.maxpagesize=4"})
        assert rows == whole and len(pages) == 7, orderby


async def test_keyset_stability_between_pages(api):
    created = await _jobs(api)
    path = "Jobs?$select=JobName&$orderby=JobName"
    first = await api.ok("GET", path, headers=MAX)
    assert names(first) == created[:10]
    # Between pages: a row that sorts before the current position appears, a row not yet returned disappears.
    await make_job(api, "aaa-inserted")
    await api.ok("DELETE", "Jobs('job15')", 204)
    rows, _ = await _follow(api, _relative(first["@odata.nextLink"]), MAX)
    seen = names(first) + rows
    assert len(seen) == len(set(seen)), "no row repeated"
    assert seen == [n for n in created if n != "job15"], "no row lost"


async def test_paging_a_navigation_collection(api):
    await seed_connections(api)
    await make_job(api, "p/q r", **{f"Query#{i}": f"REPLICATE [t{i}]" for i in range(1, 6)})
    rows, pages = await _follow(api, "Jobs('p%2Fq%20r')/Tasks?$select=TaskId", {"Prefer": "odata.maxpagesize=2"},
                                key="TaskId")
    assert rows == [1, 2, 3, 4, 5] and len(pages) == 3
    assert unquote(pages[0]["@odata.nextLink"]).split("?")[0].endswith("/api.rsc/Jobs('p/q r')/Tasks")


async def test_bad_skiptokens(api):
    await _jobs(api, 12)
    first = await api.ok("GET", "Jobs?$orderby=" + q("Verbosity,JobName"), headers=MAX)
    link = _relative(first["@odata.nextLink"])
    token = parse_qs(urlsplit(link).query)["$skiptoken"][0]
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    for bad in (tampered, "abc", "not a token", token[:10], token + "x"):
        response = await send(api, "GET", "Jobs?$orderby=" + q("Verbosity,JobName") + "&$skiptoken=" + q(bad))
        await expect_error(response, 400)
    # A genuine token replayed against a different ordering is refused too.
    await expect_error(await send(api, "GET", "Jobs?$skiptoken=" + q(token)), 400)
