"""Connections through HTTP: TestConnection, GetConnectionTables and GetConnectionTableColumns against every provider
(real PostgreSQL and MariaDB databases made for this run, SQLite/DuckDB files and a CSV folder in tmp_path, and a
second odata-sync as an OData feed), failures that are answers rather than errors or hangs, and connection secrets:
encrypted at rest, masked on read, kept when the mask is written back, and never in a response, the log or the
Requests set."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from odata_sync.app import build_app, create_runtime
from odata_sync.config import from_environment
from tests.api.connection_helpers import (
    REMOTE_PASSWORD,
    REMOTE_TOKEN,
    RecordingApi,
    closed_port,
    columns,
    create,
    dump,
    html_site,
    make_csv_folder,
    make_duckdb,
    make_sqlite,
    mariadb_source,
    postgres_source,
    remote_service,
    requests_log,
    server_connection_string,
    shape,
    silent_listener,
    tables,
    try_connection,
)
from tests.api.helpers import expect_error, send
from tests.conftest import Api

MASK = "********"


@pytest.fixture(scope="module")
def pg_source():
    with postgres_source() as url:
        yield url


@pytest.fixture(scope="module")
def maria():
    with mariadb_source() as source:
        yield source


def _when(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text)


async def _tested(api: Api, name: str, status: str = "Success") -> dict:
    """TestConnection, checked against what it must record: ConnectionState, LastTested, a new ETag and Modified."""
    before = await api.ok("GET", f"Connections('{name}')")
    row = await try_connection(api, name)
    assert row["Status"] == status, row
    after = await api.ok("GET", f"Connections('{name}')")
    assert after["ConnectionState"] == ("Successful" if status == "Success" else "Failed"), after
    assert after["LastTested"] is not None, after
    assert _when(after["LastTested"]) >= _when(after["Created"])
    assert before["LastTested"] is None or _when(after["LastTested"]) > _when(before["LastTested"])
    assert after["@odata.etag"] != before["@odata.etag"]
    assert _when(after["Modified"]) > _when(before["Modified"])
    return row


async def _stored(runtime, name: str) -> str:
    table = runtime.store.table("Connections")
    async with runtime.store.engine.connect() as conn:
        return (await conn.execute(sa.select(table.c.ConnectionString).where(table.c.Name == name))).scalar_one()


# ---- file providers ---------------------------------------------------------------------------------------------


async def test_sqlite_duckdb_and_csv(api, tmp_path):
    # A folder whose name needs quoting: ';', '=' and a quote inside a quoted value round-trip.
    weird = tmp_path / "we;ird=dir's"
    lite = make_sqlite(weird / "src.db")
    quoted = "'" + str(lite).replace("'", "''") + "'"
    created = await create(api, "lite", "SQLite", f"Database={quoted};CommandTimeout=5")
    assert created["ConnectionString"] == f'Database="{lite}";CommandTimeout=5'
    assert created["ConnectionState"] == "Untested" and created["LastTested"] is None
    assert (await api.ok("GET", "Connections('lite')"))["ConnectionString"] == created["ConnectionString"]
    row = await _tested(api, "lite")
    assert row["Message"] == "The connection succeeded"
    await _tested(api, "lite")  # a second test moves LastTested and the ETag again

    assert await tables(api, "lite") == [("main", "notes", "TABLE", None), ("main", "orders", "TABLE", None)]
    assert await tables(api, "lite", TableOrView="VIEWS") == [("main", "big_orders", "VIEW", None)]
    everything = await tables(api, "lite", TableOrView="all")
    assert [t[1] for t in everything] == ["big_orders", "notes", "orders"]
    assert await tables(api, "lite", Schema="main", TableOrView="ALL") == everything
    assert await tables(api, "lite", TableOrView="ALL", TopTable=1, SkipTable=1) == [everything[1]]
    assert await tables(api, "lite", TableOrView="ALL", TopTable="2", SkipTable="2") == [everything[2]]
    assert await tables(api, "lite", TableOrView="ALL", SkipTable=3) == []
    assert await tables(api, "lite", TableOrView="ALL", TopTable=0) == []
    assert {t[0] for t in await tables(api, "lite", IncludeSchema=False)} == {None}
    assert {t[0] for t in await tables(api, "lite", IncludeSchema="false")} == {None}
    assert await tables(api, "lite", IncludeSchema=True, IncludeCatalog=True) == everything[1:]  # no catalogs

    orders = await columns(api, "lite", "orders")
    assert list(orders) == ["id", "customer", "amount", "placed"]
    assert shape(orders["id"]) == ("INTEGER", False, None, None, None, True)
    assert shape(orders["customer"]) == ("VARCHAR(40)", False, 40, None, None, False)
    assert shape(orders["amount"]) == ("DECIMAL(10,2)", True, None, 10, 2, False)
    assert await columns(api, "lite", "main.orders") == orders
    assert await columns(api, "lite", '"main"."orders"') == orders
    assert list(await columns(api, "lite", "big_orders")) == ["id", "amount"]

    # DuckDB: schemas and a catalog.
    duck = make_duckdb(tmp_path / "warehouse.duckdb")
    await create(api, "duck", "DuckDB", f"Database={duck}")
    await _tested(api, "duck")
    assert await tables(api, "duck") == [("main", "orders", "TABLE", None), ("sales", "customers", "TABLE", None)]
    assert await tables(api, "duck", TableOrView="VIEWS") == [("main", "big_orders", "VIEW", None)]
    assert await tables(api, "duck", Schema="sales") == [("sales", "customers", "TABLE", None)]
    assert await tables(api, "duck", Schema="nope") == []
    catalogs = {t[3] for t in await tables(api, "duck", TableOrView="ALL", IncludeCatalog=True)}
    assert catalogs == {"warehouse"}
    customers = await columns(api, "duck", "sales.customers")
    assert list(customers) == ["code", "score"]
    assert customers["code"]["IsPrimaryKey"] and not customers["code"]["IsNullable"]
    assert customers["score"]["DataType"] == "DOUBLE" and customers["score"]["IsNullable"]
    duck_orders = await columns(api, "duck", "orders")
    assert shape(duck_orders["amount"]) == ("DECIMAL(10,2)", True, None, 10, 2, False)
    assert await columns(api, "duck", "main.orders") == duck_orders

    # CSV: each *.csv is a table; a BOM, latin-1 and ragged rows do not get in the way of the metadata.
    folder = make_csv_folder(tmp_path / "csv folder")
    await create(api, "files", "CSV", f"URI={folder}")
    await _tested(api, "files")
    assert await tables(api, "files") == [(None, n, "TABLE", None) for n in ("bom", "latin", "people", "ragged")]
    assert await tables(api, "files", TableOrView="VIEWS") == []
    assert await tables(api, "files", TopTable=1, SkipTable=2) == [(None, "people", "TABLE", None)]
    people = await columns(api, "files", "people")
    assert list(people) == ["id", "name", "born"] and not any(c["IsPrimaryKey"] for c in people.values())
    assert people["id"]["DataType"] != people["name"]["DataType"], "types are detected from the rows"
    assert list(await columns(api, "files", "bom")) == ["code", "qty"]
    assert list(await columns(api, "files", "latin.csv")) == ["café", "prix"]
    assert list(await columns(api, "files", "ragged")) == ["a", "b", "c"]


# ---- server databases -------------------------------------------------------------------------------------------


async def test_postgresql(api, pg_source):
    # Local PostgreSQL trusts loopback, so the password is not checked, but it must parse and stay masked.
    text = server_connection_string(pg_source, Password='"pg;pass=word"', CommandTimeout="10")
    created = await create(api, "pg", "PostgreSQL", text)
    assert f"Password={MASK}" in created["ConnectionString"] and "pg;pass" not in created["ConnectionString"]
    await _tested(api, "pg")

    database = server_connection_string(pg_source).split("Database=")[1].split(";")[0]
    assert await tables(api, "pg") == [("public", "orders", "TABLE", None), ("sales", "customers", "TABLE", None),
                                       ("sales", "regions", "TABLE", None)]
    assert await tables(api, "pg", TableOrView="VIEWS") == [("public", "big_orders", "VIEW", None)]
    everything = await tables(api, "pg", TableOrView="ALL")
    assert [(s, n) for s, n, _, _ in everything] == [("public", "big_orders"), ("public", "orders"),
                                                     ("sales", "customers"), ("sales", "regions")]
    assert await tables(api, "pg", Schema="sales") == everything[2:]
    assert await tables(api, "pg", Schema="sales", TableOrView="VIEWS") == []
    assert await tables(api, "pg", TableOrView="ALL", TopTable=2, SkipTable=1) == everything[1:3]
    assert await tables(api, "pg", TableOrView="ALL", IncludeSchema=False) == [(None, n, k, None)
                                                                               for _, n, k, _ in everything]
    assert await tables(api, "pg", TableOrView="ALL", IncludeCatalog=True) == [(s, n, k, database)
                                                                               for s, n, k, _ in everything]

    orders = await columns(api, "pg", "orders")
    assert list(orders) == ["id", "customer", "amount", "placed", "note"]
    assert shape(orders["id"]) == ("integer", False, None, None, None, True)
    assert shape(orders["customer"]) == ("character varying(40)", False, 40, None, None, False)
    assert shape(orders["amount"]) == ("numeric(10,2)", True, None, 10, 2, False)
    assert shape(orders["placed"]) == ("timestamp with time zone", True, None, None, None, False)
    assert shape(orders["note"]) == ("text", True, None, None, None, False)
    assert await columns(api, "pg", "public.orders") == orders
    customers = await columns(api, "pg", "sales.customers")
    assert shape(customers["code"]) == ("character(8)", False, 8, None, None, True)
    assert customers["score"]["DataType"] == "double precision"
    assert await columns(api, "pg", '"sales"."customers"') == customers
    assert list(await columns(api, "pg", "big_orders")) == ["id", "amount"]
    error = await expect_error(await send(api, "POST", "GetConnectionTableColumns",
                                          json_body={"ConnectionName": "pg", "Table": "customers"}), 400)
    assert "customers" in error["message"], "not on the search path: only the qualified name finds it"

    # An unknown user is the server's refusal, reported as it said it.
    await create(api, "pg-nobody", "PostgreSQL", server_connection_string(pg_source, User="nobody_odsync_x"))
    row = await _tested(api, "pg-nobody", "Failed")
    assert row["Message"].startswith("PostgreSQL:") and 'role "nobody_odsync_x" does not exist' in row["Message"]


async def test_mariadb_with_a_password(api, runtime, maria, caplog):
    """A user with a real password (with ';' and '=' in it): masked, encrypted, kept by the mask, and never shown."""
    caplog.set_level(logging.DEBUG)
    api = RecordingApi(api)
    requests_before = len((await api.ok("GET", "Requests"))["value"])
    created = await create(api, "maria", "MariaDB", maria.connection_string())
    assert created["ProviderName"] == "MySQL"
    assert created["ConnectionString"] == maria.connection_string(MASK).replace(f'"{MASK}"', MASK)
    stored = await _stored(runtime, "maria")
    assert stored.startswith("enc:v1:") and maria.password not in stored and maria.user not in stored
    assert runtime.service.box.decrypt(stored) == maria.connection_string()
    await _tested(api, "maria")

    assert await tables(api, "maria") == [(maria.database, "orders", "TABLE", None)]
    assert await tables(api, "maria", TableOrView="ALL") == [(maria.database, "big_orders", "VIEW", None),
                                                             (maria.database, "orders", "TABLE", None)]
    assert await tables(api, "maria", TableOrView="VIEWS", IncludeSchema=False) == [(None, "big_orders", "VIEW", None)]
    assert await tables(api, "maria", Schema=maria.other) == [(maria.other, "customers", "TABLE", None)]
    assert await tables(api, "maria", TableOrView="ALL", TopTable=1, SkipTable=1) == [
        (maria.database, "orders", "TABLE", None)]
    orders = await columns(api, "maria", "orders")
    assert list(orders) == ["id", "customer", "amount", "placed"]
    assert orders["id"]["DataType"].startswith("int") and orders["id"]["IsPrimaryKey"]
    assert not orders["id"]["IsNullable"]
    assert shape(orders["customer"]) == ("varchar(40)", False, 40, None, None, False)
    assert shape(orders["amount"]) == ("decimal(10,2)", True, None, 10, 2, False)
    assert await columns(api, "maria", f"{maria.database}.orders") == orders
    customers = await columns(api, "maria", f"{maria.other}.customers")
    assert shape(customers["code"]) == ("char(8)", False, 8, None, None, True)
    assert await columns(api, "maria", f"`{maria.other}`.`customers`") == customers

    # Writing the masked value back (with another change) keeps the stored password: the test still succeeds.
    masked = (await api.ok("GET", "Connections('maria')"))["ConnectionString"]
    await api.ok("PATCH", "Connections('maria')", json={"ConnectionString": masked + ";CommandTimeout=20"})
    assert runtime.service.box.decrypt(await _stored(runtime, "maria")) == maria.connection_string(
        CommandTimeout="20")
    after = await api.ok("GET", "Connections('maria')")
    assert after["ConnectionString"] == masked + ";CommandTimeout=20"
    assert after["ConnectionState"] == "Untested" and after["LastTested"] is None, "a changed string is untested"
    await api.ok("PUT", "Connections('maria')", json={"ConnectionString": after["ConnectionString"], "Verbosity": 3})
    await _tested(api, "maria")

    # A wrong password: a failed test with the server's message, a failed listing, no secret in either.
    wrong = "Wr0ng;pass=" + maria.password[-6:][::-1]
    await api.ok("PATCH", "Connections('maria')", json={"ConnectionString": maria.connection_string(wrong)})
    failed = await _tested(api, "maria", "Failed")
    assert failed["Message"].startswith("MySQL:") and "Access denied" in failed["Message"], failed
    assert maria.user in failed["Message"]
    error = await api.error("POST", "GetConnectionTables", 400, json={"ConnectionName": "maria"})
    assert error["code"] == "ConnectionFailed" and "Access denied" in error["message"]
    await create(api, "maria-nobody", "MySQL", maria.connection_string(User="nobody_odsync_x"))
    row = await try_connection(api, "maria-nobody")
    assert row["Status"] == "Failed" and "Access denied" in row["Message"]

    # The passwords are in no response, no log record and no Requests row.
    rows = await requests_log(api, requests_before + 20)
    assert len(rows) > requests_before + 20
    assert any(r["URL"].endswith("/GetConnectionTables") and r["Status"] == 400 and r["Error"] for r in rows)
    assert len(api.bodies) >= 20  # every response of the scenario above is checked below
    for secret in (maria.password, wrong, maria.password.split(";")[1], wrong.split(";")[1]):
        for text in api.bodies:
            assert secret not in text, (secret, text)
        assert secret not in dump(rows), secret
        assert secret not in caplog.text, secret
        assert all(secret not in str(r.args) for r in caplog.records), secret


async def test_a_server_that_cannot_be_reached(api):
    """Closed ports fail at once with the driver's message; a failed listing is a ConnectionFailed error."""
    port = closed_port()
    await create(api, "pg-closed", "PostgreSQL", f"Server=127.0.0.1;Port={port};Database=x;User=y")
    await create(api, "my-closed", "MySQL", f"Server=127.0.0.1;Port={port};Database=x;User=y;Password='Cl0sed;pw'")
    await create(api, "od-closed", "OData", f"URL=http://127.0.0.1:{port}/api.rsc/")
    started = time.monotonic()
    results = await asyncio.gather(*(_tested(api, name, "Failed") for name in ("pg-closed", "my-closed", "od-closed")))
    assert time.monotonic() - started < 10
    pg, my, od = (row["Message"] for row in results)
    assert pg.startswith("PostgreSQL:") and str(port) in pg, pg
    assert my.startswith("MySQL:") and "Can't connect to MySQL server on '127.0.0.1'" in my, my
    assert od.startswith("OData:") and f"127.0.0.1:{port}" in od, od
    assert "Cl0sed" not in pg + my + od
    error = await expect_error(await send(api, "POST", "GetConnectionTables",
                                          json_body={"ConnectionName": "pg-closed"}), 400)
    assert error["code"] == "ConnectionFailed" and error["message"].startswith("PostgreSQL:")


async def test_a_host_that_never_answers_times_out(api):
    """A listener that accepts and stays silent: CommandTimeout=2 bounds the test, for every network provider."""
    async with silent_listener() as port:
        await create(api, "pg-silent", "PostgreSQL",
                     f"Server=127.0.0.1;Port={port};Database=x;User=y;Password=S1lent;CommandTimeout=2")
        await create(api, "my-silent", "MySQL", f"Server=127.0.0.1;Port={port};Database=x;User=y;CommandTimeout=2")
        await create(api, "od-silent", "OData", f"URL=http://127.0.0.1:{port}/api.rsc/;CommandTimeout=2")

        async def timed(coroutine) -> tuple[float, object]:
            started = time.monotonic()
            result = await coroutine
            return time.monotonic() - started, result

        outcomes = await asyncio.gather(
            *(timed(try_connection(api, name)) for name in ("pg-silent", "my-silent", "od-silent")),
            timed(send(api, "POST", "GetConnectionTableColumns",
                       json_body={"ConnectionName": "pg-silent", "Table": "t"})))
    for elapsed, row in outcomes[:3]:
        assert 1.5 <= elapsed < 10, (elapsed, row)
        assert row["Status"] == "Failed" and "timed out" in row["Message"], row
        assert "S1lent" not in row["Message"]
    elapsed, response = outcomes[3]
    assert 1.5 <= elapsed < 10
    error = await expect_error(response, 400)
    assert error["code"] == "ConnectionFailed" and "timed out" in error["message"]
    for name in ("pg-silent", "my-silent", "od-silent"):
        assert (await api.ok("GET", f"Connections('{name}')"))["ConnectionState"] == "Failed"


async def test_missing_and_unusable_files(api, tmp_path):
    (tmp_path / "garbage.db").write_bytes(b"this is not a database file, not at all" * 100)
    (tmp_path / "a-folder.db").mkdir()
    (tmp_path / "plain-file").write_text("x")
    cases = {
        "lite-missing": ("SQLite", tmp_path / "missing.db", "does not exist"),
        "lite-garbage": ("SQLite", tmp_path / "garbage.db", "not a database"),
        "lite-folder": ("SQLite", tmp_path / "a-folder.db", "SQLite:"),
        "duck-missing": ("DuckDB", tmp_path / "missing.duckdb", "does not exist"),
        "duck-garbage": ("DuckDB", tmp_path / "garbage.db", "DuckDB"),
        "csv-missing": ("CSV", tmp_path / "no-such-folder", "does not exist"),
        "csv-a-file": ("CSV", tmp_path / "plain-file", "not a folder"),
    }
    for name, (provider, path, _) in cases.items():
        key = "URI" if provider == "CSV" else "Database"
        await create(api, name, provider, f"{key}={path}")
    for name, (_, _, expected) in cases.items():
        row = await _tested(api, name, "Failed")
        assert expected in row["Message"], (name, row)
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "no-such-folder").exists(), \
        "a test does not create what it tests"
    error = await expect_error(await send(api, "POST", "GetConnectionTables",
                                          json_body={"ConnectionName": "lite-missing"}), 400)
    assert "does not exist" in error["message"]


_UNPRIVILEGED_SERVER = """
import asyncio, json, sys
from aiohttp.test_utils import TestClient, TestServer
from odata_sync.app import build_app, create_runtime
from odata_sync.config import from_environment
from odata_sync.config import Config
from pathlib import Path

async def main():
    data, target = Path(sys.argv[1]), sys.argv[2]
    runtime = await create_runtime(Config(data_dir=data, admin_token="unprivileged-admin-token-0123456789"))
    async with TestClient(TestServer(build_app(runtime))) as client:
        headers = {"x-cdata-authtoken": "unprivileged-admin-token-0123456789"}
        for name, provider, text in (("lite", "SQLite", "Database=" + target + "/files/locked.db"),
                                     ("csv-file", "CSV", "URI=" + target + "/files"),
                                     ("csv-folder", "CSV", "URI=" + target + "/unlisted")):
            response = await client.post("/api.rsc/Connections", headers=headers,
                                         json={"Name": name, "ProviderName": provider, "ConnectionString": text})
            assert response.status == 201, await response.text()
            response = await client.post("/api.rsc/TestConnection", headers=headers, json={"ConnectionName": name})
            print(response.status, json.dumps((await response.json())["value"][0]))

asyncio.run(main())
"""


async def test_unreadable_files(tmp_path):
    """Mode 0 stops everyone but a privileged root: the server runs in a subprocess, with its capabilities dropped
    (setpriv) when the tests run as root, so the check means the same on a developer's machine and in CI."""
    files, unlisted = tmp_path / "files", tmp_path / "unlisted"
    locked = [make_sqlite(files / "locked.db"), files / "t.csv"]
    locked[1].write_text("a\n1\n")
    unlisted.mkdir()
    (unlisted / "u.csv").write_text("a\n1\n")
    for path in locked:
        path.chmod(0)
    unlisted.chmod(0o300)  # it can be entered but not listed
    command = [sys.executable, "-c", _UNPRIVILEGED_SERVER, str(tmp_path / "data"), str(tmp_path)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("running as root needs util-linux's setpriv to drop the capability to read any file")
        command = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", *command]
    try:
        result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60,
                                         cwd=Path(__file__).parents[2])
    finally:
        unlisted.chmod(0o700)
        for path in locked:
            path.chmod(0o600)
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout + result.stderr
    expected = (("SQLite:", "unable to open"), ("CSV:", "Permission denied"), ("CSV:", "Permission denied"))
    for line, (prefix, text) in zip(lines, expected, strict=True):
        status, _, payload = line.partition(" ")
        row = json.loads(payload)
        assert status == "200" and row["Status"] == "Failed", line
        assert row["Message"].startswith(prefix) and text in row["Message"], line


# ---- OData --------------------------------------------------------------------------------------------------------


async def test_odata_feed_of_a_second_server(api, tmp_path):
    async with remote_service(tmp_path / "remote") as url:
        quoted_password = '"' + REMOTE_PASSWORD + '"'
        created = await create(api, "remote", "OData", f"URL={url};User=admin;Password={quoted_password}")
        assert created["ConnectionString"] == f"URL={url};User=admin;Password={MASK}"
        row = await _tested(api, "remote")
        assert row["Message"] == "The connection succeeded"
        await create(api, "remote-token", "OData", f"URL={url};AuthToken={REMOTE_TOKEN}")
        await _tested(api, "remote-token")

        sets = await tables(api, "remote")
        assert [n for _, n, _, _ in sets] == ["Connections", "History", "Jobs", "Requests", "TaskHistory", "Tasks",
                                              "Transformations", "Users"]
        assert {(s, k, c) for s, _, k, c in sets} == {(None, "TABLE", None)}
        assert await tables(api, "remote", TableOrView="VIEWS") == []
        assert await tables(api, "remote", TableOrView="ALL", TopTable=2, SkipTable=1) == sets[1:3]
        jobs = await columns(api, "remote-token", "Jobs")
        assert shape(jobs["JobName"])[:2] == ("Edm.String", False) and jobs["JobName"]["IsPrimaryKey"]
        assert jobs["JobName"]["Ordinal"] == 1 and jobs["Verbosity"]["DataType"] == "Edm.Int32"
        assert not jobs["Verbosity"]["IsPrimaryKey"]
        connections = await columns(api, "remote", "connections")  # entity sets match case-insensitively
        assert connections["Name"]["IsPrimaryKey"] and connections["Name"]["MaxLength"] == 256
        assert connections["LastTested"]["DataType"] == "Edm.DateTimeOffset"
        error = await expect_error(await send(api, "POST", "GetConnectionTableColumns",
                                              json_body={"ConnectionName": "remote", "Table": "NoSuchSet"}), 400)
        assert "NoSuchSet" in error["message"]

        await create(api, "remote-bad", "OData", f"URL={url};User=admin;Password=not-the-password")
        row = await _tested(api, "remote-bad", "Failed")
        assert row["Message"].startswith("OData:") and "401" in row["Message"]
        assert "not-the-password" not in row["Message"]

    async with html_site() as site:
        await create(api, "html", "OData", f"URL={site}")
        row = await _tested(api, "html", "Failed")
        assert "text/html" in row["Message"] and "OData 4.0" in row["Message"], row
        error = await expect_error(await send(api, "POST", "GetConnectionTables",
                                              json_body={"ConnectionName": "html"}), 400)
        assert "text/html" in error["message"]


async def test_a_password_inside_the_url_is_masked(api, tmp_path):
    async with remote_service(tmp_path / "remote") as url:
        secret = quote(REMOTE_PASSWORD, safe="")
        await create(api, "in-url", "OData", f'URL="{url.replace("http://", f"http://admin:{secret}@")}"')
        assert (await try_connection(api, "in-url"))["Status"] == "Success", "the URL's credentials are used"
        read = await api.ok("GET", "Connections('in-url')")
        assert secret not in read["ConnectionString"] and REMOTE_PASSWORD not in read["ConnectionString"], read


# ---- action input -----------------------------------------------------------------------------------------------


async def test_action_input_errors(api, tmp_path):
    await create(api, "lite", "SQLite", f"Database={make_sqlite(tmp_path / 'a.db')}")
    for action, extra in (("TestConnection", {}), ("GetConnectionTables", {}),
                          ("GetConnectionTableColumns", {"Table": "t"})):
        await expect_error(await send(api, "POST", action, json_body=extra), 400)
        await expect_error(await send(api, "POST", action, json_body={"ConnectionName": "nope", **extra}), 404)
    for params in ({"TableOrView": "SYNONYMS"}, {"TopTable": -1}, {"SkipTable": -2}, {"TopTable": "many"},
                   {"IncludeSchema": "perhaps"}, {"Unknown": 1}):
        await expect_error(await send(api, "POST", "GetConnectionTables",
                                      json_body={"ConnectionName": "lite", **params}), 400)
    for table in (None, "", "no_such_table", "main.no_such_table", "a.b.c.d"):
        body = {"ConnectionName": "lite"} | ({} if table is None else {"Table": table})
        await expect_error(await send(api, "POST", "GetConnectionTableColumns", json_body=body), 400)
    # names are case-insensitive, body keys included
    body = await api.ok("POST", "getconnectiontables", json={"connectionname": "lite", "tableorview": "views"})
    assert [r["TableName"] for r in body["value"]] == ["big_orders"]
    assert (await api.ok("GET", "Connections('lite')"))["ConnectionState"] == "Untested", "listing is not testing"


# ---- secrets ----------------------------------------------------------------------------------------------------


PG_TEXT = "Server=db.example.com;Port=5432;Database=sales;User=etl;Password='k3y;with=parts'"


async def test_secret_key_from_config_and_key_file(api, config, runtime, aiohttp_client, tmp_path, monkeypatch):
    """One ODATA_SYNC_SECRET_KEY reads the store from any runtime; another key gets a clear answer, never a 500."""
    monkeypatch.setenv("ODATA_SYNC_SECRET_KEY", "first key; any text will do")
    assert from_environment().secret_key == "first key; any text will do"
    key_file = config.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, "the key file is created private"
    again = await create_runtime(config)  # the same data dir: the same key file
    assert again.service.box.key == runtime.service.box.key
    await again.store.close()

    lite = make_sqlite(tmp_path / "k.db")
    first = Api(await aiohttp_client(build_app(await create_runtime(dataclasses.replace(
        config, secret_key="first key; any text will do", data_dir=tmp_path / "a")))))
    await create(first, "lite", "SQLite", f"Database={lite}")
    pg = await create(first, "pg", "PostgreSQL", PG_TEXT)
    assert pg["ConnectionString"] == f"Server=db.example.com;Port=5432;Database=sales;User=etl;Password={MASK}"

    second_runtime = await create_runtime(dataclasses.replace(config, secret_key="first key; any text will do",
                                                              data_dir=tmp_path / "b"))
    second = Api(await aiohttp_client(build_app(second_runtime)))
    assert (await second.ok("GET", "Connections('pg')"))["ConnectionString"] == pg["ConnectionString"]
    assert second_runtime.service.box.decrypt(await _stored(second_runtime, "pg")) == \
        "Server=db.example.com;Port=5432;Database=sales;User=etl;Password=\"k3y;with=parts\""
    await _tested(second, "lite")

    other = Api(await aiohttp_client(build_app(await create_runtime(dataclasses.replace(
        config, secret_key="another key", data_dir=tmp_path / "c")))))
    listing = await other.ok("GET", "Connections?$orderby=Name")
    assert [(c["Name"], c["ConnectionString"]) for c in listing["value"]] == [("lite", None), ("pg", None)]
    assert (await other.ok("GET", "Connections('pg')"))["ConnectionString"] is None
    row = await _tested(other, "lite", "Failed")
    assert "cannot be decrypted" in row["Message"] and "ODATA_SYNC_SECRET_KEY" in row["Message"]
    for action, body in (("GetConnectionTables", {"ConnectionName": "lite"}),
                         ("GetConnectionTableColumns", {"ConnectionName": "lite", "Table": "orders"})):
        error = await expect_error(await send(other, "POST", action, json_body=body), 409)
        assert "cannot be decrypted" in error["message"]
    error = await expect_error(await send(other, "PATCH", "Connections('pg')", json_body={
        "ConnectionString": pg["ConnectionString"]}), 409)
    assert error["code"] == "SecretUnavailable"
    await expect_error(await send(other, "PATCH", "Connections('pg')", json_body={"ProviderName": "MySQL"}), 409)
    await other.ok("PATCH", "Connections('pg')", json={"Verbosity": 4})  # no secret involved: fine
    # Writing the whole connection string again is the way out; it is then stored under the new key.
    await other.ok("PATCH", "Connections('lite')", json={"ConnectionString": f"Database={lite}"})
    await _tested(other, "lite")
    assert (await other.ok("GET", "Connections('lite')"))["ConnectionString"] == f"Database={lite}"
    assert (await first.ok("GET", "Connections('lite')"))["ConnectionString"] is None, "now the first key fails"
    assert (await first.ok("GET", "Connections('pg')"))["ConnectionString"] == pg["ConnectionString"]


async def test_job_creator_and_support(api, tmp_path):
    lite = make_sqlite(tmp_path / "roles.db")
    await create(api, "lite", "SQLite", f"Database={lite}")
    await create(api, "pg", "PostgreSQL", PG_TEXT)
    created = await api.ok("POST", "CreateUsers", json={
        "User#1": "jc", "Roles#1": "cdata_job_creator", "User#2": "sup", "Roles#2": "cdata_support"})
    tokens = {row["User"]: row["AuthToken"] for row in created["value"]}
    creator, support = api.as_token(tokens["jc"]), api.as_token(tokens["sup"])

    seen = []
    for path in ("Connections", "Connections?$select=Name,ConnectionString", "Connections('pg')",
                 "Connections('pg')?$select=ConnectionString", "Connections?$search=sales"):
        body = await creator.ok("GET", path)
        seen.append(dump(body))
        for row in body.get("value", [body]):
            assert row.get("ConnectionString") is None, (path, row)
    for path in ("Connections('pg')/ConnectionString", "Connections('pg')/ConnectionString/$value"):
        response = await send(creator, "GET", path)
        assert response.status == 204, (path, response.status, await response.text())
    await expect_error(await send(creator, "PATCH", "Connections('pg')", json_body={"Verbosity": 1}), 403)
    await expect_error(await send(creator, "POST", "Connections", json_body={
        "Name": "mine", "ProviderName": "SQLite", "ConnectionString": "Database=/tmp/mine.db"}), 403)
    seen.append(dump(await creator.ok("POST", "GetConnectionTables", json={"ConnectionName": "lite"})))
    seen.append(dump(await creator.ok("POST", "GetConnectionTableColumns",
                                      json={"ConnectionName": "lite", "Table": "orders"})))
    assert (await try_connection(creator, "lite"))["Status"] == "Success"
    for text in seen:
        assert "Database=" not in text and "db.example.com" not in text and "k3y" not in text, text

    for action, body in (("TestConnection", {"ConnectionName": "lite"}),
                         ("GetConnectionTables", {"ConnectionName": "lite"}),
                         ("GetConnectionTableColumns", {"ConnectionName": "lite", "Table": "orders"})):
        await expect_error(await send(support, "POST", action, json_body=body), 403)
    read = await support.ok("GET", "Connections('pg')")
    assert read["ConnectionString"].endswith(f"Password={MASK}") and "k3y" not in dump(read)


async def test_stored_strings_are_encrypted(api, runtime, tmp_path):
    """Every stored connection string is ciphertext, whatever the provider; reading it back masks the secrets."""
    await create(api, "pg", "PostgreSQL", PG_TEXT)
    await create(api, "od", "OData", "URL=https://feed.example.com/odata/;User=me;AuthToken=t0ken-Value;PageSize=50")
    await create(api, "lite", "SQLite", f"Database={tmp_path / 'x.db'}")
    for name in ("pg", "od", "lite"):
        stored = await _stored(runtime, name)
        assert stored.startswith("enc:v1:") and "example.com" not in stored and "x.db" not in stored, stored
    od = await api.ok("GET", "Connections('od')")
    assert od["ConnectionString"] == f"URL=https://feed.example.com/odata/;User=me;AuthToken={MASK};PageSize=50"
    await expect_error(await send(api, "GET", "Connections?$filter=" + "contains(ConnectionString,'k3y')"), 400)
    assert (await api.ok("GET", "Connections?$search=k3y"))["value"] == []


async def test_an_unquoted_secret_is_not_echoed(api):
    response = await send(api, "POST", "Connections", json_body={
        "Name": "typo", "ProviderName": "PostgreSQL",
        "ConnectionString": "Server=h;Database=d;User=u;Password=Plain;TailOfTheSecret42"})
    error = await expect_error(response, 400)
    rows = await requests_log(api, 0)
    assert "TailOfTheSecret42" not in error["message"]
    assert "TailOfTheSecret42" not in dump(rows)
