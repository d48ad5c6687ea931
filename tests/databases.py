"""Per-run databases on the machine's real PostgreSQL and MariaDB servers.

Server URLs come from ODATA_SYNC_TEST_PG_URL / ODATA_SYNC_TEST_MYSQL_URL (defaults: the loopback servers with
trust / empty-password root). Where a server is unreachable the test is skipped with the reason, except when
``CI`` is set: CI runs where the servers exist, so there an unreachable server is a failure.
Each helper creates a fresh, uniquely named database and drops only that one.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_URL = os.environ.get("ODATA_SYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("ODATA_SYNC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_server(url: str, default_port: int, what: str) -> None:
    """Skip (or fail under CI) when the database server at ``url`` does not accept connections."""
    if _reachable(url, default_port):
        return
    message = f"{what} is not reachable at {url}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: these tests must run in CI")
    pytest.skip(message)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def _pg_admin(sql: str) -> None:
    """Run one statement on the PostgreSQL maintenance database (autocommit; CREATE/DROP DATABASE need it)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


async def pg_execute(url: str, sql: str) -> None:
    """Run ``sql`` (one or more statements) on the PostgreSQL database at ``url``."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_fetch(url: str, sql: str) -> list[tuple]:
    """The rows of one query on the PostgreSQL database at ``url``."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def _mysql_admin(sql: str) -> None:
    import asyncio

    import aiomysql

    parts = urlsplit(MYSQL_URL)

    async def run() -> None:
        conn = await aiomysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                                      user=parts.username or "root", password=parts.password or "",
                                      autocommit=True, connect_timeout=10)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
        finally:
            conn.close()

    asyncio.run(run())


@contextmanager
def postgres_database(prefix: str = "odsync_test") -> Iterator[str]:
    """Create a fresh PostgreSQL database; yield its ``postgresql://`` URL; drop it afterwards."""
    require_server(PG_URL, 5432, "PostgreSQL")
    name = unique_name(prefix)
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(PG_URL, name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def mysql_database(prefix: str = "odsync_test") -> Iterator[str]:
    """Create a fresh MariaDB/MySQL database; yield its ``mysql://`` URL; drop it afterwards."""
    require_server(MYSQL_URL, 3306, "MariaDB/MySQL")
    name = unique_name(prefix)
    _mysql_admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield _with_database(MYSQL_URL, name)
    finally:
        _mysql_admin(f"DROP DATABASE IF EXISTS `{name}`")
