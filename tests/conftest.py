"""Fixtures: the app on the aiohttp test server over a real store — SQLite and PostgreSQL (every API test runs on both)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from odata_sync.app import build_app, create_runtime
from odata_sync.config import Config
from odata_sync.store.engine import async_url
from odata_sync.store.tables import table_name
from tests.databases import postgres_database

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN_PASSWORD = "Admin-Passw0rd!"


@pytest.fixture(scope="session")
def _postgres_url():
    with postgres_database("odsync_api") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url = request.getfixturevalue("_postgres_url")
    asyncio.run(_truncate(url))
    return url


async def _truncate(url: str) -> None:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            tables = [n for n in names if n != "alembic_version"]
            if tables:
                await conn.execute(sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY"))
    finally:
        await engine.dispose()


class Api:
    """A test client that authenticates as a given token and speaks JSON."""

    def __init__(self, client, token: str = ADMIN_TOKEN) -> None:
        self.client = client
        self.token = token
        self.root = "/api.rsc/"

    def as_token(self, token: str) -> Api:
        return Api(self.client, token)

    def _headers(self, headers):
        merged = {"x-cdata-authtoken": self.token} if self.token else {}
        merged.update(headers or {})
        return merged

    async def request(self, method: str, path: str, *, json=None, data=None, headers=None):
        url = path if path.startswith("/") else self.root + path
        return await self.client.request(method, url, json=json, data=data, headers=self._headers(headers))

    async def get(self, path, **kw):
        return await self.request("GET", path, **kw)

    async def post(self, path, json=None, **kw):
        return await self.request("POST", path, json=json, **kw)

    async def patch(self, path, json=None, **kw):
        return await self.request("PATCH", path, json=json, **kw)

    async def put(self, path, json=None, **kw):
        return await self.request("PUT", path, json=json, **kw)

    async def delete(self, path, **kw):
        return await self.request("DELETE", path, **kw)

    async def ok(self, method: str, path: str, status: int = 200, **kw):
        """Request and assert the status; return the parsed JSON (or text)."""
        response = await self.request(method, path, **kw)
        text = await response.text()
        assert response.status == status, f"{method} {path}: {response.status} {text}"
        if response.content_type == "application/json" and text:
            return await response.json()
        return text

    async def error(self, method: str, path: str, status: int, **kw) -> dict:
        """Request, assert an OData error body with ``status``; return the error object."""
        response = await self.request(method, path, **kw)
        body = await response.json(content_type=None)
        assert response.status == status, f"{method} {path}: {response.status} {body}"
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
        assert response.headers.get("OData-Version") == "4.0"
        return body["error"]


@pytest.fixture
def config(tmp_path, store_url) -> Config:
    return Config(data_dir=tmp_path / "data", database_url=store_url, admin_token=ADMIN_TOKEN,
                  admin_password=ADMIN_PASSWORD, max_page_size=1000)


@pytest.fixture
async def runtime(config):
    return await create_runtime(config)


@pytest.fixture
async def client(aiohttp_client, runtime):
    return await aiohttp_client(build_app(runtime))


@pytest.fixture
async def api(client) -> Api:
    return Api(client)


async def make_connection(api: Api, name: str = "src", provider: str = "SQLite", connection_string: str | None = None):
    body = {"Name": name, "ProviderName": provider,
            "ConnectionString": connection_string or f"Database=/tmp/{name}.db"}
    return await api.ok("POST", "Connections", 201, json=body)


async def make_job(api: Api, name: str = "job1", source: str = "src", destination: str = "dst", **extra):
    return await api.ok("POST", "Jobs", 201, json={"JobName": name, "Source": source, "Destination": destination,
                                                   **extra})


__all__ = ["Api", "make_connection", "make_job", "table_name"]
