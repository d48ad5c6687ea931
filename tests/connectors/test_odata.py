"""The OData source against a small, real OData-4.0-shaped HTTP server started by the test."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
import uuid
from typing import Any

import pytest
from aiohttp import web

from odata_sync.connectors import open_connector
from odata_sync.connectors import types as T
from odata_sync.errors import BadRequest, ConnectionFailed

METADATA = """<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="Demo.Model" Alias="D" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      <EnumType Name="Level"><Member Name="Low"/><Member Name="High"/></EnumType>
      <ComplexType Name="Address"><Property Name="City" Type="Edm.String"/></ComplexType>
      <EntityType Name="Order">
        <Key><PropertyRef Name="Id"/></Key>
        <Property Name="Id" Type="Edm.Int64" Nullable="false"/>
        <Property Name="Name" Type="Edm.String" MaxLength="50"/>
        <Property Name="Amount" Type="Edm.Decimal" Precision="18" Scale="4"/>
        <Property Name="Placed" Type="Edm.DateTimeOffset"/>
        <Property Name="Day" Type="Edm.Date"/>
        <Property Name="Active" Type="Edm.Boolean"/>
        <Property Name="Ref" Type="Edm.Guid"/>
        <Property Name="Data" Type="Edm.Binary"/>
        <Property Name="Ratio" Type="Edm.Double"/>
        <Property Name="Tags" Type="Collection(Edm.String)"/>
        <Property Name="Ship" Type="D.Address"/>
        <Property Name="Level" Type="D.Level"/>
        <NavigationProperty Name="Customer" Type="D.Customer"/>
      </EntityType>
      <EntityType Name="Person">
        <Key><PropertyRef Name="Code"/></Key>
        <Property Name="Code" Type="Edm.String" Nullable="false" MaxLength="10"/>
      </EntityType>
      <EntityType Name="Customer" BaseType="D.Person">
        <Property Name="Since" Type="Edm.TimeOfDay"/>
      </EntityType>
      <EntityContainer Name="Container">
        <EntitySet Name="Orders" EntityType="Demo.Model.Order"/>
        <EntitySet Name="Customers" EntityType="D.Customer"/>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>"""

ROW_COUNT = 2500
UTC = dt.UTC


def order(i: int, *, as_strings: bool) -> dict[str, Any]:
    amount = "12345678901234.5678" if i == 1 else f"{i}.5"
    return {
        "Id": str(i) if as_strings else i,
        "Name": f"order {i} – ü 🚀",
        "Amount": amount if as_strings else decimal.Decimal(amount),
        "Placed": "2024-03-01T05:30:00.123456+05:30",
        "Day": "2024-02-29",
        "Active": i % 2 == 0,
        "Ref": "12345678-1234-5678-1234-567812345678",
        "Data": base64.urlsafe_b64encode(b"\x00\xff" + bytes([i % 256])).decode(),
        "Ratio": 0.25,
        "Tags": ["a", "b"],
        "Ship": {"City": "Zürich"},
        "Level": "High",
    }


class Feed:
    """Serves $metadata, Orders and Customers with server-driven paging; remembers the query options it got."""

    def __init__(self, *, numbers_as_json: bool = False) -> None:
        self.requests: list[dict[str, str]] = []
        self.numbers_as_json = numbers_as_json

    def authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if request.headers.get("x-cdata-authtoken") == "tok-123":
            return True
        return header == "Basic " + base64.b64encode(b"reader:pa;ss=word").decode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            return web.json_response({"error": {"code": "401", "message": "Authentication required"}}, status=401)
        path = request.match_info["path"]
        if path == "$metadata":
            return web.Response(text=METADATA, content_type="application/xml")
        if path == "Orders/$count":
            return web.Response(text=str(ROW_COUNT), content_type="text/plain")
        if path == "Customers":
            return self.page(request, [{"Code": "C1", "Since": "08:30:00"}], ieee=True)
        if path != "Orders":
            return web.json_response({"error": {"code": "404", "message": f"no {path}"}}, status=404)
        self.requests.append(dict(request.query))
        ieee = "IEEE754Compatible=true" in request.headers.get("Accept", "") and not self.numbers_as_json
        rows = [order(i, as_strings=ieee) for i in range(1, ROW_COUNT + 1)]
        if "$select" in request.query:
            keep = request.query["$select"].split(",")
            rows = [{k: row[k] for k in keep} for row in rows]
        return self.page(request, rows, ieee=ieee)

    def page(self, request: web.Request, rows: list[dict], *, ieee: bool) -> web.Response:
        prefer = request.headers.get("Prefer", "")
        size = int(prefer.split("odata.maxpagesize=")[1]) if "odata.maxpagesize=" in prefer else 1000
        start = int(request.query.get("$skiptoken", "0"))
        if "$top" in request.query:
            rows = rows[:int(request.query["$top"])]
        body: dict[str, Any] = {"@odata.context": "$metadata#Orders", "value": rows[start:start + size]}
        if start + size < len(rows):
            query = dict(request.query) | {"$skiptoken": str(start + size)}
            body["@odata.nextLink"] = str(request.url.with_query(query))
        text = _encode(body)
        content_type = "application/json;odata.metadata=minimal" + (";IEEE754Compatible=true" if ieee else "")
        return web.Response(text=text, headers={"Content-Type": content_type})


def _encode(body: dict) -> str:
    """JSON with decimals as bare numbers (what a feed sends when it ignores IEEE754Compatible)."""
    def default(value: Any) -> str:
        return f"__decimal__{value}__" if isinstance(value, decimal.Decimal) else str(value)
    return re.sub(r'"__decimal__([-0-9.]+)__"', r"\1", json.dumps(body, default=default))


async def start(aiohttp_server, feed: Feed) -> str:
    app = web.Application()
    app.router.add_get("/odata/{path:.*}", feed.handle)
    async def login_page(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Please log in</body></html>", content_type="text/html")

    app.router.add_get("/html/{path:.*}", login_page)
    server = await aiohttp_server(app)
    return str(server.make_url("/"))


@pytest.fixture
async def feed_url(aiohttp_server) -> tuple[Feed, str]:
    feed = Feed()
    return feed, await start(aiohttp_server, feed) + "odata"


BASIC = ";User=reader;Password='pa;ss=word'"


async def test_connects_with_basic_auth_or_a_token(feed_url) -> None:
    _, url = feed_url
    for credentials in (BASIC, ";AuthToken=tok-123"):
        async with open_connector("OData", f"URL={url}{credentials}") as connector:
            await connector.test()
    connector = open_connector("OData", f"URL={url};User=reader;Password=wrong-secret")
    with pytest.raises(ConnectionFailed, match="401") as info:
        await connector.test()
    assert "wrong-secret" not in info.value.message
    await connector.close()


async def test_entity_sets_are_tables_with_columns_from_metadata(feed_url) -> None:
    _, url = feed_url
    async with open_connector("OData", f"URL={url}{BASIC}") as connector:
        assert [t.name for t in await connector.list_tables()] == ["Customers", "Orders"]
        columns = {c.name: c for c in await connector.list_columns("orders")}
        assert list(columns) == ["Id", "Name", "Amount", "Placed", "Day", "Active", "Ref", "Data", "Ratio", "Tags",
                                 "Ship", "Level"]
        assert columns["Id"].primary_key and not columns["Id"].nullable
        assert columns["Name"].canonical == T.string(50) and columns["Name"].max_length == 50
        assert columns["Amount"].canonical == T.decimal(18, 4)
        assert columns["Placed"].canonical == T.TIMESTAMPTZ
        assert columns["Ref"].canonical == T.UUID and columns["Data"].canonical == T.BINARY
        assert columns["Tags"].canonical == T.JSON and columns["Ship"].canonical == T.JSON
        assert columns["Level"].canonical == T.TEXT
        assert [c.ordinal for c in columns.values()] == list(range(1, 13))
        customers = await connector.list_columns("Customers")
        assert [(c.name, c.primary_key) for c in customers] == [("Code", True), ("Since", False)]
        assert await connector.estimate_rows("Orders") == ROW_COUNT


async def test_pages_are_followed_and_regrouped_into_batches(feed_url) -> None:
    feed, url = feed_url
    async with open_connector("OData", f"URL={url}{BASIC};PageSize=1000") as connector:
        columns, batches = await connector.read("Orders", 600)
        sizes, rows = [], []
        async for batch in batches:
            sizes.append(len(batch))
            rows.extend(batch)
    assert sizes == [600, 600, 600, 600, 100]
    assert len(feed.requests) == 3  # 1000 + 1000 + 500 rows
    assert [r[0] for r in rows] == list(range(1, ROW_COUNT + 1))
    first = dict(zip([c.name for c in columns], rows[0], strict=True))
    assert first["Amount"] == decimal.Decimal("12345678901234.5678")
    assert first["Placed"] == dt.datetime(2024, 3, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert first["Day"] == dt.date(2024, 2, 29)
    assert first["Active"] is False and first["Ratio"] == 0.25
    assert first["Ref"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert first["Data"] == b"\x00\xff\x01"
    assert json.loads(first["Tags"]) == ["a", "b"] and json.loads(first["Ship"]) == {"City": "Zürich"}
    assert first["Name"] == "order 1 – ü 🚀"


async def test_decimals_sent_as_json_numbers_stay_exact(aiohttp_server) -> None:
    feed = Feed(numbers_as_json=True)
    url = await start(aiohttp_server, feed) + "odata"
    async with open_connector("OData", f"URL={url}{BASIC}") as connector:
        _, batches = await connector.read("SELECT Id, Amount FROM Orders", 10)
        first = await anext(batches)
        await batches.aclose()
    assert first[0] == (1, decimal.Decimal("12345678901234.5678"))


async def test_select_and_where_are_pushed_down(feed_url) -> None:
    feed, url = feed_url
    async with open_connector("OData", f"URL={url}{BASIC}") as connector:
        columns, batches = await connector.read(
            "SELECT [Id], Name FROM Orders WHERE (Id > 10 AND Name <> 'it''s') OR Placed IS NULL "
            "ORDER BY Id DESC LIMIT 5", 100)
        rows = [row async for batch in batches for row in batch]
        assert [c.name for c in columns] == ["Id", "Name"]
        assert len(rows) == 5
        assert feed.requests[-1] == {"$select": "Id,Name",
                                     "$filter": "((Id gt 10 and Name ne 'it''s') or Placed eq null)",
                                     "$orderby": "Id desc", "$top": "5"}

        moment = dt.datetime(2024, 1, 1, tzinfo=UTC)
        _, batches = await connector.read("Orders", 5000, columns=["Id"], where=[("Placed", ">=", moment),
                                                                                 ("Day", "<", "2025-01-01")])
        assert len([row async for batch in batches for row in batch]) == ROW_COUNT
        assert feed.requests[-1] == {"$select": "Id", "$filter": "Placed ge 2024-01-01T00:00:00Z and Day lt 2025-01-01"}


@pytest.mark.parametrize("query", ["SELECT * FROM Orders o JOIN Customers c ON o.Id = c.Code",
                                   "SELECT upper(Name) FROM Orders", "SELECT * FROM Orders WHERE Id + 1 > 2",
                                   "SELECT Nope FROM Orders", "SELECT * FROM Nowhere"])
async def test_queries_that_cannot_be_pushed_down_are_bad_requests(feed_url, query: str) -> None:
    _, url = feed_url
    async with open_connector("OData", f"URL={url}{BASIC}") as connector:
        with pytest.raises(BadRequest):
            await connector.read(query)


async def test_an_url_that_answers_html_is_a_connection_failure(aiohttp_server) -> None:
    base = await start(aiohttp_server, Feed())
    async with open_connector("OData", f"URL={base}html/service") as connector:
        with pytest.raises(ConnectionFailed, match="text/html"):
            await connector.test()
        with pytest.raises(ConnectionFailed, match="text/html"):
            await connector.list_tables()


async def test_an_unknown_path_is_a_connection_failure(feed_url) -> None:
    _, url = feed_url
    async with open_connector("OData", f"URL={url}/nothing/here{BASIC}") as connector:
        with pytest.raises(ConnectionFailed, match="404"):
            await connector.test()
