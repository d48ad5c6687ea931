"""Fixtures: one way to get a connector of each provider on a fresh, real database (or a folder in tmp_path)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from odata_sync.connectors import Connector, open_connector
from tests.databases import mysql_database, postgres_database

SERVER_PROVIDERS = ("PostgreSQL", "MySQL")
FILE_PROVIDERS = ("SQLite", "DuckDB", "CSV")
DESTINATIONS = ("PostgreSQL", "SQLite", "MySQL", "DuckDB", "CSV")


def server_connection_string(url: str) -> str:
    """``postgresql://user:pw@host:port/db`` -> ``Server=host;Port=port;Database=db;User=user;Password=pw``."""
    parts = urlsplit(url)
    text = (f"Server={parts.hostname};Port={parts.port or (5432 if parts.scheme.startswith('postgres') else 3306)};"
            f"Database={parts.path.lstrip('/')};User={unquote(parts.username or '')}")
    if parts.password:
        text += f";Password='{unquote(parts.password)}'"
    return text


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_database("odsync_conn") as url:
        yield url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    with mysql_database("odsync_conn") as url:
        yield url


@pytest.fixture
def connection_string(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``connection_string('SQLite')`` -> a connection string for a fresh place of that provider.

    Server databases are set up here, outside the test's event loop, for the providers the test is parametrized
    with (or whose URL fixture it names); a server that is not there skips only those tests.
    """
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    wanted = {value for value in params.values() if isinstance(value, str)}
    urls = {provider: request.getfixturevalue(fixture)
            for provider, fixture in (("PostgreSQL", "pg_url"), ("MySQL", "mysql_url"))
            if provider in wanted or fixture in request.fixturenames}

    def make(provider: str) -> str:
        if provider in SERVER_PROVIDERS:
            return server_connection_string(urls[provider])
        place = tmp_path / f"{provider.lower()}_{uuid.uuid4().hex[:6]}"
        if provider == "SQLite":
            return f"Database={place}.db"
        if provider == "DuckDB":
            return f"Database={place}.duckdb"
        if provider == "CSV":
            return f"URI={place}"
        raise AssertionError(provider)
    return make


@pytest.fixture
async def connect(connection_string: Callable[[str], str]):
    """``await connect('MySQL')`` -> an open connector, closed after the test."""
    opened: list[Connector] = []

    async def make(provider: str, text: str | None = None, timeout: float = 30) -> Connector:
        connector = open_connector(provider, text or connection_string(provider), timeout=timeout)
        await connector.open()
        opened.append(connector)
        return connector

    yield make
    for connector in opened:
        await connector.close()


def table_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
