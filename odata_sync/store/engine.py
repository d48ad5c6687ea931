"""The store engine: SQLite (WAL, foreign keys, case-sensitive LIKE) by default, PostgreSQL for a shared store."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from odata_sync.edm.model import Model
from odata_sync.errors import BadRequest
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


def _json_value(value):
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def _generate_builder(table: sa.Table, names: tuple[str, ...], dialect: str):
    items = []
    for index, name in enumerate(names):
        column_type = table.c[name].type
        value = f"r[{index}]"
        if isinstance(column_type, sa.JSON):
            value = f"_json(r[{index}])"
        elif dialect == "sqlite" and isinstance(column_type, sa.Boolean):
            value = f"(None if r[{index}] is None else r[{index}] == 1)"
        items.append(f"{name!r}: {value}")
    source = "def build(r):\n    return {'@odata.etag': None, " + ", ".join(items) + "}\n"
    namespace = {"_json": _json_value}
    exec(compile(source, f"<row builder {table.name}>", "exec"), namespace)  # noqa: S102 - names are EDM names
    return namespace["build"]


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
    _write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    compiled: dict = field(default_factory=dict)
    row_cache: dict = field(default_factory=dict)  # (entity set, key) -> (Modified, shaped row); see Reader
    inline: InlineReader | None = None
    _builders: dict = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def table(self, entity_set: str) -> sa.Table:
        return self.metadata.tables[table_name(entity_set)]

    def read(self) -> ReadSession:
        """A read-only session: ``async with store.read() as session: rows = await session.fetch(select)``."""
        return ReadSession(self)

    def in_list(self, column: sa.ColumnElement, values: list) -> sa.ColumnElement:
        """``column IN (values)`` with the whole list as ONE parameter, so the SQL stays cacheable for any length."""
        if self.dialect == "sqlite":
            items = sa.func.json_each(sa.bindparam(None, orjson.dumps(values).decode(), type_=sa.String))
            return column.in_(sa.select(sa.column("value")).select_from(items).scalar_subquery())
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))

    def row_builder(self, table: sa.Table, names: tuple[str, ...]):
        """A function turning one raw driver row (see ``fetch``) into ``{"@odata.etag": None, name: value, ...}``.

        Generated once per column list: one dict display per row is several times faster than zipping and then
        converting. SQLite booleans become bools and JSON text is parsed; SQLite timestamps stay as their stored
        ISO-8601 'Z' text, which is exactly what the JSON payload shows.
        """
        key = (table.name, names)
        builder = self._builders.get(key)
        if builder is None:
            builder = self._builders[key] = _generate_builder(table, names, self.dialect)
        return builder

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction. SQLite allows one writer at a time: queueing writers here, in order, beats
        letting them collide in SQLite's busy handler (which sleeps) or fail a lock upgrade."""
        if self.dialect == "sqlite":
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    async def close(self) -> None:
        if self.inline is not None:
            self.inline.close()
        await self.engine.dispose()


class InlineReader:
    """Short SQLite reads run right on the event loop.

    Handing a read to aiosqlite's thread costs more than most reads themselves: the rows are built under the GIL
    either way, and a dozen threads taking turns with the loop spend their time in futex calls. So a read first runs
    here with a budget of SQLite VM steps; one that exceeds it is interrupted (reads have no side effects) and
    re-run on a thread, so a long scan never holds the loop for more than a couple of milliseconds.
    """

    STEPS_PER_CHECK = 1000
    MAX_CHECKS = 100

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in ("query_only=ON", "case_sensitive_like=ON", "busy_timeout=100"):
            self.connection.execute(f"PRAGMA {pragma}")
        self.connection.create_function("regexp", 2, _regexp, deterministic=True)
        self._checks = 0
        self.connection.set_progress_handler(self._progress, self.STEPS_PER_CHECK)

    def _progress(self) -> int:
        self._checks += 1
        return 1 if self._checks > self.MAX_CHECKS else 0

    def fetch(self, sql: str, values: list) -> list | None:
        """The rows, or None when the read ran out of budget (or met a lock) and should go to a thread."""
        self._checks = 0
        try:
            return self.connection.execute(sql, values).fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc) or "locked" in str(exc):
                return None
            raise

    def close(self) -> None:
        self.connection.close()


def create_store(url: str, model: Model) -> Store:
    url = async_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Every aiosqlite connection is a thread; most reads run inline (InlineReader), so a few suffice.
        # No reset on return: every SQLAlchemy connection ends its own transaction, and raw reads open none,
        # so a pool-level rollback would only cost a thread hop per request.
        engine = create_async_engine(url, pool_size=8, max_overflow=8, pool_reset_on_return=None)
        event.listen(engine.sync_engine, "connect", _sqlite_setup)
        if path and path != ":memory:":
            return Store(engine, build_metadata(model), model, inline=InlineReader(path))
    else:
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    return Store(engine, build_metadata(model), model)


class ReadSession:
    """Reads that skip SQLAlchemy's execution and result machinery on the hot path.

    SQL is compiled once per statement shape (SQLAlchemy's cache key) and run on a raw pooled driver connection in
    one driver call; rows come back as the driver returns them (see ``Store.row_builder``). Statements with expanding
    IN parameters take SQLAlchemy's ordinary path on a connection opened only when needed.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._raw = None
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> ReadSession:
        return self

    async def __aexit__(self, *exc) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._raw is not None:
            self._raw.close()

    async def connection(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self.store.engine.connect()
        return self._conn

    async def fetch(self, statement: sa.Select) -> list:
        store = self.store
        cache_key = statement._generate_cache_key()
        entry = store.compiled.get(cache_key.key) if cache_key is not None else None
        if entry is None:
            compiled = statement._compiler(store.engine.dialect, cache_key=cache_key, column_keys=None,
                                           for_executemany=False, linting=0)
            expanding = any(bind.expanding for bind in compiled.binds.values())
            entry = (compiled, str(compiled), expanding)
            if cache_key is not None and len(store.compiled) < 2000:
                store.compiled[cache_key.key] = entry
        compiled, sql, expanding = entry
        if expanding or cache_key is None or compiled.positiontup is None:
            conn = await self.connection()
            return [tuple(row) for row in (await conn.execute(statement)).all()]
        params = compiled.construct_params(extracted_parameters=cache_key.bindparams)
        processors = compiled._bind_processors
        values = [processors[name](params[name]) if name in processors else params[name]
                  for name in compiled.positiontup]
        if store.inline is not None:
            rows = store.inline.fetch(sql, values)
            if rows is not None:
                return rows
        if self._raw is None:
            self._raw = await store.engine.raw_connection()
        driver = self._raw.driver_connection
        try:
            if store.dialect == "sqlite":
                return await driver.execute_fetchall(sql, values)
            return await driver.fetch(sql, *values)
        except asyncpg.exceptions.DataError as exc:  # e.g. an overflow in $filter arithmetic
            raise BadRequest(f"The query cannot be evaluated: {exc}") from exc
