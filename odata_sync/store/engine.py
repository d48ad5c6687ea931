"""The store engine: SQLite (WAL, foreign keys, case-sensitive LIKE) by default, PostgreSQL for a shared store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from odata_sync.edm.model import Model
from odata_sync.store.tables import build_metadata, table_name


def async_url(url: str) -> str:
    """Accept the plain URLs users write (``sqlite:///…``, ``postgresql://…``) and pick the async driver."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:"):]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    if url.startswith(("sqlite+aiosqlite:", "postgresql+asyncpg:")):
        return url
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///path or postgresql://user@host/db")


def _regexp(pattern: str | None, value: str | None) -> bool | None:
    if pattern is None or value is None:
        return None
    return re.search(pattern, value) is not None


def _sqlite_setup(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=15000", "case_sensitive_like=ON",
                   "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
    dbapi_connection.create_function("regexp", 2, _regexp, deterministic=True)


@dataclass
class Store:
    """The engine plus the EDM-derived tables, keyed by entity-set name."""

    engine: AsyncEngine
    metadata: sa.MetaData
    model: Model

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def table(self, entity_set: str) -> sa.Table:
        return self.metadata.tables[table_name(entity_set)]

    async def close(self) -> None:
        await self.engine.dispose()


def create_store(url: str, model: Model) -> Store:
    url = async_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=8, max_overflow=8)
        event.listen(engine.sync_engine, "connect", _sqlite_setup)
    else:
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    return Store(engine, build_metadata(model), model)
