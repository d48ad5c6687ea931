"""Bad input and broken servers end as ConnectionFailed or BadRequest, quickly, with no secret in the message."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from odata_sync.connectors import ColumnInfo, open_connector
from odata_sync.connectors import types as T
from odata_sync.errors import BadRequest, ConnectionFailed

from .conftest import DESTINATIONS, server_connection_string, table_name

SLACK = 3.0  # seconds allowed beyond the timeout (scheduling on a loaded 2-core machine)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def silent_connection_string(provider: str, port: int) -> str:
    if provider == "OData":
        return f"URL=http://127.0.0.1:{port}/odata/"
    return f"Server=127.0.0.1;Port={port};Database=db;User=u;Password=never-shown"


@pytest.mark.parametrize("provider", ["PostgreSQL", "MySQL", "OData"])
async def test_a_host_that_never_answers_fails_within_the_timeout(provider: str, silent_port: int) -> None:
    connector = open_connector(provider, silent_connection_string(provider, silent_port), timeout=2)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        await connector.test()
    elapsed = time.monotonic() - started
    await connector.close()
    assert elapsed < 2 + SLACK, f"test() took {elapsed:.1f} s with a 2 s timeout"
    assert "timed out" in info.value.message
    assert "never-shown" not in info.value.message


@pytest.mark.parametrize("provider", ["PostgreSQL", "MySQL", "OData"])
async def test_a_closed_port_is_a_connection_failure(provider: str) -> None:
    connector = open_connector(provider, silent_connection_string(provider, free_port()), timeout=5)
    with pytest.raises(ConnectionFailed) as info:
        await connector.test()
    await connector.close()
    assert info.value.message
    assert "never-shown" not in info.value.message


async def test_mysql_wrong_password(mysql_url: str) -> None:
    text = server_connection_string(mysql_url).split(";Password=")[0] + ";Password='wrong-pw;123'"
    connector = open_connector("MySQL", text, timeout=10)
    with pytest.raises(ConnectionFailed) as info:
        await connector.test()
    await connector.close()
    assert "Access denied" in info.value.message
    assert "wrong-pw" not in info.value.message


async def test_postgres_wrong_credentials(pg_url: str) -> None:
    text = server_connection_string(pg_url).split(";User=")[0] + ";User=odsync_nobody;Password=wrong-pw-123"
    connector = open_connector("PostgreSQL", text, timeout=10)
    with pytest.raises(ConnectionFailed) as info:
        await connector.test()
    await connector.close()
    assert "odsync_nobody" in info.value.message  # "role ... does not exist" or "password authentication failed"
    assert "wrong-pw-123" not in info.value.message


async def test_postgres_messages_never_carry_the_password(pg_url: str) -> None:
    # The server echoes the database name; naming it like the password shows the scrubbing at work.
    base = server_connection_string(pg_url).split(";Database=")[0]
    text = f"{base};Database=zz_s3cret_zz;User=postgres;Password=zz_s3cret_zz"
    connector = open_connector("PostgreSQL", text, timeout=10)
    with pytest.raises(ConnectionFailed) as info:
        await connector.test()
    await connector.close()
    assert "zz_s3cret_zz" not in info.value.message
    assert "********" in info.value.message


@pytest.mark.parametrize("provider", ["SQLite", "DuckDB"])
async def test_a_missing_database_file_fails_as_a_source(provider: str, tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    connector = open_connector(provider, f"Database={path}")
    with pytest.raises(ConnectionFailed, match="does not exist"):
        await connector.test()
    with pytest.raises(ConnectionFailed, match="does not exist"):
        await connector.list_tables()
    assert not path.exists()
    await connector.close()


@pytest.mark.parametrize("provider", ["SQLite", "DuckDB"])
async def test_a_missing_database_file_is_created_as_a_destination(provider: str, tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with open_connector(provider, f"Database={path}") as connector:
        await connector.create_table("t", [ColumnInfo.of("id", T.INT32)])
        await connector.write_batch("t", ["id"], [(1,)])
        await connector.test()
    assert path.exists()
    other = tmp_path / "tested.db"
    connector = open_connector(provider, f"Database={other}")
    await connector.test(create_missing=True)
    await connector.close()
    assert other.exists()


@pytest.mark.parametrize("provider", ["SQLite", "DuckDB"])
async def test_a_missing_folder_for_a_new_database_file(provider: str, tmp_path: Path) -> None:
    connector = open_connector(provider, f"Database={tmp_path / 'no' / 'such' / 'x.db'}")
    with pytest.raises(ConnectionFailed, match="folder"):
        await connector.create_table("t", [ColumnInfo.of("id", T.INT32)])
    await connector.close()


@pytest.mark.parametrize("provider", ["SQLite", "DuckDB"])
async def test_a_file_that_is_not_a_database(provider: str, tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file at all " * 200)
    connector = open_connector(provider, f"Database={path}")
    with pytest.raises(ConnectionFailed):
        await connector.test()
    await connector.close()


@pytest.mark.parametrize("provider", ["SQLite", "DuckDB"])
async def test_a_folder_where_the_file_should_be(provider: str, tmp_path: Path) -> None:
    path = tmp_path / "folder.db"
    path.mkdir()
    connector = open_connector(provider, f"Database={path}")
    with pytest.raises(ConnectionFailed):
        await connector.test()
    await connector.close()


_UNREADABLE_CHECK = """
import asyncio, sys
from odata_sync.connectors import open_connector
from odata_sync.errors import ConnectionFailed

async def main():
    connector = open_connector(sys.argv[1], "Database=" + sys.argv[2])
    try:
        await connector.test()
    except ConnectionFailed as exc:
        print("ConnectionFailed:", exc.message)
    else:
        print("opened")
    finally:
        await connector.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("provider", ["SQLite", "DuckDB"])
async def test_an_unreadable_file(provider: str, tmp_path: Path) -> None:
    """Mode 0 stops everyone but a privileged root; as root the check runs in a subprocess whose capabilities
    are dropped (setpriv), so it means the same thing on a developer's machine and in CI."""
    path = tmp_path / "locked.db"
    async with open_connector(provider, f"Database={path}") as connector:
        await connector.create_table("t", [ColumnInfo.of("id", T.INT32)])
    path.chmod(0)
    try:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.fail("running as root needs util-linux's setpriv to drop the capability to read any file")
            result = subprocess.run([setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", sys.executable, "-c",
                                     _UNREADABLE_CHECK, provider, str(path)],
                                    capture_output=True, text=True, timeout=60)
            assert result.stdout.startswith("ConnectionFailed:"), result.stdout + result.stderr
        else:
            connector = open_connector(provider, f"Database={path}")
            with pytest.raises(ConnectionFailed):
                await connector.test()
            await connector.close()
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_request_errors_are_bad_requests(provider: str, connect) -> None:
    connector = await connect(provider)
    table = table_name("bad")
    await connector.create_table(table, [ColumnInfo.of("id", T.INT32, primary_key=True)], ["id"])
    with pytest.raises(BadRequest):
        await connector.list_columns("no_such_table")
    with pytest.raises(BadRequest):
        await connector.read("no_such_table")
    with pytest.raises(BadRequest):
        await connector.read(table, 0)
    with pytest.raises(BadRequest):
        await connector.list_tables("SOMETIMES")
    with pytest.raises(BadRequest):
        await connector.read(table, columns=["no_such_column"])
    with pytest.raises(BadRequest):
        await connector.write_batch(table, ["no_such_column"], [(1,)])
    with pytest.raises(BadRequest):
        await connector.write_batch(table, ["id"], [(1, 2)])
    if provider != "CSV":  # CSV columns are text until values say otherwise
        with pytest.raises(BadRequest):
            await connector.write_batch(table, ["id"], [("not a number",)])
        with pytest.raises(BadRequest):
            await connector.read("SELECT no_such_column FROM no_such_table")
    # the connection is still usable afterwards
    await connector.write_batch(table, ["id"], [(1,)])
    _, batches = await connector.read(table)
    assert [row async for batch in batches for row in batch] == [(1,)]


async def test_odata_is_source_only() -> None:
    connector = open_connector("OData", "URL=http://127.0.0.1:1/")
    with pytest.raises(BadRequest, match="source"):
        await connector.create_table("t", [ColumnInfo.of("id", T.INT32)])
    with pytest.raises(BadRequest, match="source"):
        await connector.begin()
    await connector.close()
