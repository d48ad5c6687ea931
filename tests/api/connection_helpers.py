"""Helpers for the connection tests: source databases and folders to point connections at, servers that misbehave
(a closed port, a host that accepts and never answers, a web site that answers HTML), and the connection actions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aiohttp import web
from aiohttp.test_utils import TestServer

from odata_sync.app import build_app, create_runtime
from odata_sync.config import Config
from tests.conftest import Api
from tests.databases import _mysql_admin, mysql_database, postgres_database


class RecordingApi(Api):
    """An admin client that keeps every response body it receives, to search them for secrets afterwards."""

    def __init__(self, api: Api) -> None:
        super().__init__(api.client, api.token)
        self.bodies: list[str] = []

    async def request(self, method: str, path: str, **kw):
        response = await super().request(method, path, **kw)
        self.bodies.append(await response.text())  # aiohttp keeps the body: callers can still read it
        return response


# ---- the actions ------------------------------------------------------------------------------------------------


async def create(api: Api, name: str, provider: str, connection_string: str) -> dict:
    return await api.ok("POST", "Connections", 201, json={"Name": name, "ProviderName": provider,
                                                         "ConnectionString": connection_string})


async def try_connection(api: Api, name: str) -> dict:
    """TestConnection's single row; a failed test is still HTTP 200."""
    body = await api.ok("POST", "TestConnection", json={"ConnectionName": name})
    assert body["@odata.context"].endswith("$metadata#Collection(CData.TestConnectionOutput)"), body
    (row,) = body["value"]
    assert set(row) == {"ConnectionName", "Status", "Message"} and row["ConnectionName"] == name, row
    assert row["Status"] in ("Success", "Failed") and row["Message"], row
    return row


async def tables(api: Api, name: str, **params) -> list[tuple]:
    """GetConnectionTables as ``(Schema, TableName, TableType, Catalog)`` tuples, in the order answered."""
    body = await api.ok("POST", "GetConnectionTables", json={"ConnectionName": name, **params})
    assert body["@odata.context"].endswith("$metadata#Collection(CData.GetConnectionTablesOutput)"), body
    for row in body["value"]:
        assert set(row) == {"TableName", "Schema", "Catalog", "TableType"}, row
        assert row["TableType"] in ("TABLE", "VIEW"), row
    return [(r["Schema"], r["TableName"], r["TableType"], r["Catalog"]) for r in body["value"]]


COLUMN_FIELDS = ("ColumnName", "DataType", "IsNullable", "MaxLength", "Precision", "Scale", "IsPrimaryKey", "Ordinal")


async def columns(api: Api, name: str, table: str) -> dict[str, dict]:
    """GetConnectionTableColumns by column name; checks the output shape and that Ordinal counts from 1."""
    body = await api.ok("POST", "GetConnectionTableColumns", json={"ConnectionName": name, "Table": table})
    assert body["@odata.context"].endswith("$metadata#Collection(CData.GetConnectionTableColumnsOutput)"), body
    rows = body["value"]
    assert rows, f"no columns for {table}"
    for row in rows:
        assert set(row) == set(COLUMN_FIELDS), row
        assert isinstance(row["IsNullable"], bool) and isinstance(row["IsPrimaryKey"], bool), row
        assert isinstance(row["DataType"], str) and row["DataType"], row
    assert [r["Ordinal"] for r in rows] == list(range(1, len(rows) + 1)), rows
    return {r["ColumnName"]: r for r in rows}


def shape(column: dict) -> tuple:
    """(DataType, IsNullable, MaxLength, Precision, Scale, IsPrimaryKey) of a column row."""
    return tuple(column[k] for k in COLUMN_FIELDS[1:7])


async def requests_log(api: Api, since: int, timeout: float = 5.0) -> list[dict]:
    """Poll the Requests set (flushed in batches every ~0.5 s) until it holds more than ``since`` rows."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = (await api.ok("GET", "Requests?$orderby=Timestamp"))["value"]
        if len(rows) > since or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


def dump(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ---- source databases -------------------------------------------------------------------------------------------


def server_connection_string(url: str, **overrides: str) -> str:
    """A per-run database URL as a connection string; ``overrides`` replace or add keys (values written as given)."""
    parts = urlsplit(url)
    pairs = {"Server": parts.hostname or "127.0.0.1",
             "Port": str(parts.port or (5432 if parts.scheme.startswith("postgres") else 3306)),
             "Database": parts.path.lstrip("/"), "User": unquote(parts.username or "")}
    if parts.password:
        pairs["Password"] = '"' + unquote(parts.password).replace('"', '""') + '"'
    pairs.update(overrides)
    return ";".join(f"{k}={v}" for k, v in pairs.items())


PG_SETUP = """
CREATE TABLE orders (id integer PRIMARY KEY, customer varchar(40) NOT NULL, amount numeric(10,2),
                     placed timestamptz, note text);
CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100;
CREATE SCHEMA sales;
CREATE TABLE sales.customers (code char(8) PRIMARY KEY, name text, score double precision);
CREATE TABLE sales.regions (id bigint PRIMARY KEY);
"""


@contextmanager
def postgres_source() -> Iterator[str]:
    """A per-run PostgreSQL database with a table, a view and two tables in schema ``sales``."""
    with postgres_database("odsync_conn_api") as url:
        _run_pg(url, PG_SETUP)
        yield url


def _run_pg(url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@dataclass(frozen=True)
class MariaSource:
    database: str  # the connection's database: a table and a view
    other: str  # a second database, MySQL's "schema": one table, reached as other.customers
    user: str  # created for this run, with a password
    password: str
    server: str
    port: int

    def connection_string(self, password: str | None = None, **overrides: str) -> str:
        secret = self.password if password is None else password
        pairs = {"Server": self.server, "Port": str(self.port), "Database": self.database, "User": self.user,
                 "Password": '"' + secret.replace('"', '""') + '"', **overrides}
        return ";".join(f"{k}={v}" for k, v in pairs.items())


@contextmanager
def mariadb_source() -> Iterator[MariaSource]:
    """Two per-run MariaDB databases and a user with a password (``;`` and ``=`` in it) created for them."""
    with mysql_database("odsync_conn_api") as url, mysql_database("odsync_conn_api_b") as other_url:
        parts = urlsplit(url)
        database, other = parts.path.lstrip("/"), urlsplit(other_url).path.lstrip("/")
        user = f"ods_{uuid.uuid4().hex[:10]}"
        password = f"Ma;ria=Pw-{uuid.uuid4().hex[:12]}"
        _mysql_admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        try:
            for db in (database, other):
                _mysql_admin(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'%'")
            for statement in (
                    f"CREATE TABLE `{database}`.orders (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL, "
                    "amount DECIMAL(10,2), placed DATETIME)",
                    f"CREATE VIEW `{database}`.big_orders AS SELECT id, amount FROM `{database}`.orders",
                    f"CREATE TABLE `{other}`.customers (code CHAR(8) PRIMARY KEY, name TEXT)"):
                _mysql_admin(statement)
            yield MariaSource(database, other, user, password, parts.hostname or "127.0.0.1", parts.port or 3306)
        finally:
            _mysql_admin(f"DROP USER IF EXISTS '{user}'@'%'")


# ---- files ------------------------------------------------------------------------------------------------------


def make_sqlite(path: Path) -> Path:
    """A SQLite file with a table (typed columns, a key), a view and a key-less table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript("""
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer VARCHAR(40) NOT NULL, amount DECIMAL(10,2),
                                 placed TIMESTAMP);
            CREATE TABLE notes (body TEXT);
            CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100;
            INSERT INTO orders VALUES (1, 'ann', 150.25, '2024-01-02 03:04:05');
        """)
    return path


def make_duckdb(path: Path) -> Path:
    import duckdb

    conn = duckdb.connect(str(path))
    try:
        conn.execute("""
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer VARCHAR NOT NULL, amount DECIMAL(10,2));
            CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100;
            CREATE SCHEMA sales;
            CREATE TABLE sales.customers (code VARCHAR PRIMARY KEY, score DOUBLE);
        """)
    finally:
        conn.close()
    return path


def make_csv_folder(folder: Path) -> Path:
    """CSV tables: plain, with a BOM, latin-1 encoded, and one with ragged rows (short and long)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "people.csv").write_text("id,name,born\r\n1,Ann,2001-02-03\r\n2,Bob,1999-12-31\r\n", encoding="utf-8")
    (folder / "bom.csv").write_bytes(b"\xef\xbb\xbfcode,qty\r\nA,1\r\nB,2\r\n")
    (folder / "latin.csv").write_bytes("café,prix\r\ncrème,3.50\r\nthé,2.25\r\n".encode("latin-1"))
    (folder / "ragged.csv").write_text("a,b,c\r\n1,2\r\n3,4,5,\r\n6\r\n", encoding="utf-8")
    (folder / "notes.txt").write_text("not a table\n", encoding="utf-8")
    return folder


# ---- misbehaving servers ----------------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def silent_listener() -> AsyncIterator[int]:
    """A TCP port on loopback that accepts connections and never says a word; yields the port."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client gives up and closes

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


@asynccontextmanager
async def html_site() -> AsyncIterator[str]:
    """A web site that answers every GET with an HTML page (200); yields its base URL."""
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><html><body><h1>Welcome</h1></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/portal/"))
    finally:
        await server.close()


REMOTE_TOKEN = "remote-admin-token-0123456789abcdef"
REMOTE_PASSWORD = "Rem0te;Pass=word!"


@asynccontextmanager
async def remote_service(data_dir: Path) -> AsyncIterator[str]:
    """A second odata-sync on a real loopback port (its own SQLite store); yields its service root URL."""
    runtime = await create_runtime(Config(data_dir=data_dir, admin_token=REMOTE_TOKEN, admin_password=REMOTE_PASSWORD))
    server = TestServer(build_app(runtime), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/api.rsc/"))
    finally:
        await server.close()
