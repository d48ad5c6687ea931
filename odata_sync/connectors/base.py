"""The one interface every provider implements, and the plumbing they share.

Public methods live here and do the common work once: open lazily, bound every driver call by the timeout, turn driver
exceptions into ``ConnectionFailed``/``BadRequest`` with secrets scrubbed, and make each write atomic when the caller
has no transaction of its own. Providers implement the underscored hooks.

Reading returns ``(columns, batches)``: ``batches`` is an async iterator of ``list[tuple]`` fetched from a server-side
cursor, so memory is bounded by the batch size whatever the table size. Iterate it to the end or ``aclose()`` it.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from odata_sync.errors import BadRequest, ConnectionFailed, ODataSyncError

from . import values
from .connstr import scrub
from .sql import Condition, is_select, resolve_table
from .types import CanonicalType, TypeWarning

TABLE_KINDS = ("TABLES", "VIEWS", "ALL")


@dataclass(frozen=True)
class TableInfo:
    """A table or view as GetConnectionTables lists it (``type`` is ``TABLE`` or ``VIEW``)."""

    name: str
    schema: str | None = None
    catalog: str | None = None
    type: str = "TABLE"


def pick_columns(available: list[ColumnInfo], names: Sequence[str]) -> list[ColumnInfo]:
    """The named columns of a query's result, in the order asked (a name it lacks is the caller's error)."""
    by_name = {c.name: c for c in available}
    missing = [c for c in names if c not in by_name]
    if missing:
        raise BadRequest(f"column '{missing[0]}' is not in the query's result")
    return [by_name[c] for c in names]


@dataclass(frozen=True)
class ColumnInfo:
    """A column as GetConnectionTableColumns lists it; ``canonical`` is what the other side maps from."""

    name: str
    native_type: str = ""
    canonical: CanonicalType = field(default_factory=lambda: CanonicalType("text"))
    nullable: bool = True
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    primary_key: bool = False
    ordinal: int = 0

    @classmethod
    def of(cls, name: str, canonical: CanonicalType, *, nullable: bool = True, primary_key: bool = False,
           native_type: str = "", ordinal: int = 0) -> ColumnInfo:
        """A column described by its canonical type (what ``create_table`` needs)."""
        return cls(name=name, native_type=native_type or str(canonical), canonical=canonical,
                   nullable=nullable and not primary_key, max_length=canonical.length,
                   precision=canonical.precision, scale=canonical.scale, primary_key=primary_key, ordinal=ordinal)


@dataclass
class WriteCounts:
    """Rows changed by an upsert: unchanged rows (same values already there) count in neither."""

    inserted: int = 0
    updated: int = 0

    @property
    def affected(self) -> int:
        return self.inserted + self.updated


class BatchReader(Protocol):
    """A provider's open cursor: ``fetch`` returns canonical tuples, ``[]`` at the end."""

    async def fetch(self, size: int) -> list[tuple]: ...

    async def close(self) -> None: ...


class Connector(ABC):
    """One connection to one provider, used by one task at a time (open another connector for parallel work)."""

    provider: ClassVar[str]
    writable: ClassVar[bool] = True
    #: The driver's exception classes; anything else raised inside a connector is a bug and propagates as is.
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Table changes the provider cannot roll back (MySQL commits DDL implicitly): refused inside a transaction
    #: rather than silently committing the caller's batch.
    untransactional_ddl: ClassVar[frozenset[str]] = frozenset()
    #: The write hooks take ``ready``: the positions whose values are already canonical for their column (see
    #: ``write_batch``'s ``canonical``), so their conversion can be skipped.
    skips_ready_columns: ClassVar[bool] = False
    #: ``add_primary_key`` works: a full load creates the table without its key and adds it once the rows are in.
    defers_primary_key: ClassVar[bool] = False

    def __init__(self, settings: dict[str, Any], *, timeout: float | None = 30, secrets: Sequence[str] = ()) -> None:
        self.settings = settings
        limit = settings.get("Timeout", timeout)
        self.timeout: float | None = float(limit) if limit else None
        self._secrets = [s for s in secrets if s]
        self._opened = False
        self._in_transaction = False
        self._columns_cache: dict[tuple[str | None, str], list[ColumnInfo]] = {}
        #: Other answers about a table's definition (keyed by schema, table, then what was asked), forgotten with
        #: its columns
        self._table_facts: dict[tuple[str | None, str, Any], Any] = {}

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Connector:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect (bounded by the timeout). Public methods call this themselves when needed."""
        if self._opened:
            return
        async with self._guard("connecting"):
            await self._open()
        self._opened = True

    async def close(self) -> None:
        """Disconnect; an open transaction is rolled back. Never raises for a connection that is already gone."""
        if not self._opened:
            await self._close()
            return
        self._opened = False
        self._in_transaction = False
        self._forget()
        try:
            async with self._guard("closing"):
                await self._close()
        except ConnectionFailed:
            pass

    async def test(self, *, create_missing: bool = False) -> None:
        """Connect and run a trivial query, all within the timeout; raise ConnectionFailed with the driver's message.

        ``create_missing`` lets a destination test create a missing SQLite/DuckDB file or CSV folder.
        """
        started = time.monotonic()
        async with self._guard("testing the connection", started=started):
            if not self._opened:
                await self._open(create_missing=create_missing)
                self._opened = True
            await self._ping()

    # --- metadata ---------------------------------------------------------------------------------------------------

    async def list_tables(self, kind: str = "TABLES", schema: str | None = None) -> list[TableInfo]:
        """Tables (``TABLES``), views (``VIEWS``) or both (``ALL``), sorted by schema and name."""
        wanted = (kind or "TABLES").upper()
        if wanted not in TABLE_KINDS:
            raise BadRequest(f"TableOrView must be one of {', '.join(TABLE_KINDS)}, got '{kind}'", target="TableOrView")
        await self.open()
        async with self._guard("listing tables"):
            tables = await self._list_tables(wanted, schema)
        return sorted(tables, key=lambda t: ((t.schema or "").lower(), t.name.lower()))

    async def list_columns(self, table: str, schema: str | None = None) -> list[ColumnInfo]:
        """A table's columns in order (``ordinal`` from 1); ``table`` may be schema-qualified (``public.orders``)."""
        schema, name = self._resolve(table, schema)
        await self.open()
        async with self._guard(f"reading the columns of {name}"):
            columns = await self._list_columns(name, schema)
        if not columns:
            raise BadRequest(f"table '{table}' was not found", target="Table")
        return columns

    async def estimate_rows(self, table: str, schema: str | None = None) -> int | None:
        """A cheap row count estimate for progress (None when the source cannot tell)."""
        schema, name = self._resolve(table, schema)
        await self.open()
        async with self._guard(f"estimating the rows of {name}"):
            return await self._estimate_rows(name, schema)

    # --- reading ----------------------------------------------------------------------------------------------------

    async def read(self, source: str, batch_size: int = 10_000, *, columns: Sequence[str] | None = None,
                   where: Sequence[Condition] = (), order_by: Sequence[str] = (),
                   schema: str | None = None) -> tuple[list[ColumnInfo], AsyncIterator[list[tuple]]]:
        """Read a table (or a SELECT in the source's dialect) as batches of tuples of canonical values.

        ``columns`` projects, ``where`` filters with bound parameters (e.g. ``[("updated_at", ">=", mark)]``) and
        ``order_by`` sorts (``"id"``, ``"updated_at DESC"``); they apply to a SELECT too, wrapped as a subquery.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise BadRequest(f"batch size must be a positive integer, got {batch_size!r}", target="BatchSize")
        await self.open()
        query = source.strip().rstrip(";").rstrip()
        if is_select(query):
            what, table = "reading the query", None
        else:
            what, table = f"reading {query}", self._resolve(query, schema)
        async with self._guard(what):
            cols, reader = await self._start_read(query if table is None else None, table, list(columns or []),
                                                  list(where), list(order_by), batch_size)
        return cols, self._batches(reader, batch_size, what)

    async def _batches(self, reader: BatchReader, batch_size: int, what: str) -> AsyncIterator[list[tuple]]:
        try:
            while True:
                async with self._guard(what):
                    batch = await reader.fetch(batch_size)
                if not batch:
                    return
                yield batch
        finally:
            try:
                async with self._guard(what):
                    await reader.close()
            except ConnectionFailed:
                pass

    # --- writing ----------------------------------------------------------------------------------------------------

    def _writable(self, ddl: str | None = None) -> None:
        if not self.writable:
            raise BadRequest(f"{self.provider} connections can only be a source, not a destination")
        if ddl in self.untransactional_ddl and self._in_transaction:
            raise BadRequest(f"{self.provider} cannot undo {ddl.replace('_', ' ')}: do it outside a transaction")

    async def table_exists(self, table: str, schema: str | None = None) -> bool:
        schema, name = self._resolve(table, schema)
        await self.open()
        async with self._guard(f"looking up {name}"):
            return bool(await self._list_columns(name, schema))

    async def create_table(self, table: str, columns: Sequence[ColumnInfo], primary_key: Sequence[str] = (),
                           schema: str | None = None) -> list[TypeWarning]:
        """Create a table from canonical column types; returns the lossy mappings (empty when none)."""
        self._writable("create_table")
        schema, name = self._resolve(table, schema)
        if not columns:
            raise BadRequest(f"table '{name}' needs at least one column")
        names = [c.name for c in columns]
        if len({n.lower() for n in names}) != len(names):
            raise BadRequest(f"table '{name}' has duplicate column names")
        missing = [k for k in primary_key if k not in names]
        if missing:
            raise BadRequest(f"primary key column '{missing[0]}' is not a column of '{name}'")
        await self._open_for_write()
        self._forget(schema, name)
        async with self._guard(f"creating {name}"), self._atomic():
            return await self._create_table(name, list(columns), list(primary_key), schema)

    async def add_column(self, table: str, column: ColumnInfo, schema: str | None = None) -> list[TypeWarning]:
        self._writable("add_column")
        schema, name = self._resolve(table, schema)
        await self._open_for_write()
        self._forget(schema, name)
        async with self._guard(f"adding column {column.name} to {name}"), self._atomic():
            return await self._add_column(name, column, schema)

    async def add_primary_key(self, table: str, key: Sequence[str], schema: str | None = None) -> None:
        """Give a table its primary key (its index built from the rows already there); see ``defers_primary_key``."""
        self._writable()
        schema, name = self._resolve(table, schema)
        await self._open_for_write()
        self._forget(schema, name)
        async with self._guard(f"adding the primary key of {name}"), self._atomic():
            await self._add_primary_key(name, list(key), schema)

    async def write_batch(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                          schema: str | None = None, *, canonical: Sequence[CanonicalType | None] | None = None) -> int:
        """Append rows through the provider's bulk path; returns the number of rows written.

        ``canonical`` (optional, one per column) says the values already are canonical values of these types, as a
        source read returns them: a destination may then skip converting the columns whose type takes them as they
        are (``values.passes_as_is``)."""
        self._writable()
        if not rows:
            return 0
        schema, name = self._resolve(table, schema)
        _check_widths(rows, len(columns))
        await self._open_for_write()
        target = await self._target_columns(name, schema, columns)
        extra = self._ready(canonical, target)
        async with self._guard(f"writing to {name}"), self._atomic():
            await self._write_batch(name, schema, target, rows, **extra)
        return len(rows)

    async def upsert_batch(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                           key: Sequence[str], schema: str | None = None, *,
                           canonical: Sequence[CanonicalType | None] | None = None) -> WriteCounts:
        """Insert new rows and replace changed ones, matching on ``key``; rows equal to the stored ones are left.

        ``canonical``: as for ``write_batch``."""
        self._writable()
        if not key:
            raise BadRequest("an upsert needs key columns")
        if not rows:
            return WriteCounts()
        schema, name = self._resolve(table, schema)
        missing = [k for k in key if k not in columns]
        if missing:
            raise BadRequest(f"key column '{missing[0]}' is not among the written columns")
        _check_widths(rows, len(columns))
        await self._open_for_write()
        target = await self._target_columns(name, schema, columns)
        positions = [list(columns).index(k) for k in key]
        unique: dict[tuple, Sequence[Any]] = {}
        for row in rows:  # the last row of a key wins, as if the batch had been applied in order
            unique[tuple(row[i] for i in positions)] = row
        extra = self._ready(canonical, target)
        async with self._guard(f"upserting into {name}"), self._atomic():
            return await self._upsert_batch(name, schema, target, list(unique.values()), list(key), **extra)

    async def delete_keys(self, table: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]],
                          schema: str | None = None) -> int:
        """Delete the rows whose key is among ``keys``; returns the number deleted."""
        self._writable()
        if not keys:
            return 0
        schema, name = self._resolve(table, schema)
        _check_widths(keys, len(key_columns))
        await self._open_for_write()
        target = await self._target_columns(name, schema, key_columns)
        async with self._guard(f"deleting from {name}"), self._atomic():
            return await self._delete_keys(name, schema, target, list({tuple(k): None for k in keys}))

    async def drop_table(self, table: str, schema: str | None = None) -> None:
        """Drop a table if it exists."""
        self._writable("drop_table")
        schema, name = self._resolve(table, schema)
        await self._open_for_write()
        self._forget(schema, name)
        async with self._guard(f"dropping {name}"), self._atomic():
            await self._drop_table(name, schema)

    async def truncate(self, table: str, schema: str | None = None) -> None:
        self._writable()
        schema, name = self._resolve(table, schema)
        await self._open_for_write()
        async with self._guard(f"truncating {name}"), self._atomic():
            await self._truncate(name, schema)

    async def rename_table(self, table: str, new_name: str, schema: str | None = None) -> None:
        self._writable("rename_table")
        schema, name = self._resolve(table, schema)
        new = self._resolve(new_name, schema)[1]
        await self._open_for_write()
        self._forget()
        async with self._guard(f"renaming {name}"), self._atomic():
            await self._rename_table(name, new, schema)

    async def swap_tables(self, table: str, other: str, schema: str | None = None) -> None:
        """Exchange two tables' names atomically (a refreshed staging table takes the live table's place)."""
        self._writable("swap_tables")
        schema, first = self._resolve(table, schema)
        second = self._resolve(other, schema)[1]
        await self._open_for_write()
        self._forget()
        async with self._guard(f"swapping {first} and {second}"), self._atomic():
            await self._swap_tables(first, second, schema)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one SQL statement in the destination (transformations); returns the affected row count if known."""
        self._writable()
        await self._open_for_write()
        self._forget()
        async with self._guard("running the statement"), self._atomic():
            return await self._execute(sql, list(params))

    # --- transactions -----------------------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    async def begin(self, *, durable: bool = True) -> None:
        """Start a transaction the caller commits: a batch and the caller's checkpoint commit together.

        ``durable=False``: the commit need not wait for the disk. A crash may then lose the latest such commits but
        never part of one, so the data stays at a committed state (with its checkpoint); the next durable commit
        makes every earlier one durable too."""
        self._writable()
        if self._in_transaction:
            raise BadRequest("a transaction is already open on this connection")
        await self._open_for_write()
        async with self._guard("starting a transaction"):
            await (self._begin() if durable else self._begin_relaxed())
        self._in_transaction = True

    async def commit(self) -> None:
        if not self._in_transaction:
            raise BadRequest("no transaction is open on this connection")
        self._in_transaction = False
        async with self._guard("committing"):
            await self._commit()

    async def rollback(self) -> None:
        if not self._in_transaction:
            return
        self._in_transaction = False
        self._forget()
        async with self._guard("rolling back"):
            await self._rollback()

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Connector]:
        """``async with conn.transaction():`` commits on success and rolls back on any exception (``durable``: as
        for ``begin``)."""
        await self.begin(durable=durable)
        try:
            yield self
        except BaseException:
            with suppress(ConnectionFailed):
                await self.rollback()
            raise
        await self.commit()

    @asynccontextmanager
    async def _atomic(self) -> AsyncIterator[None]:
        """One statement group as a unit: inside the caller's transaction, or its own."""
        if self._in_transaction:
            yield
            return
        await self._begin()
        try:
            yield
        except BaseException:
            with suppress(Exception):  # the original error is the one to report
                await asyncio.shield(self._rollback())
            self._forget()
            raise
        await self._commit()

    # --- shared helpers ---------------------------------------------------------------------------------------------

    def _forget(self, schema: str | None = None, name: str | None = None) -> None:
        """Drop what is cached about table ``name`` (about every table without one): DDL ran, or a rollback."""
        if name is None:
            self._columns_cache.clear()
            self._table_facts.clear()
            return
        self._columns_cache.pop((schema, name), None)
        for fact in [f for f in self._table_facts if f[:2] == (schema, name)]:
            del self._table_facts[fact]

    def _resolve(self, table: str, schema: str | None) -> tuple[str | None, str]:
        return resolve_table(table, schema)

    async def _open_for_write(self) -> None:
        """Open, creating the database file or folder when the provider has one (destinations create it)."""
        if not self._opened:
            async with self._guard("connecting"):
                await self._open(create_missing=True)
            self._opened = True
        else:
            async with self._guard("connecting"):
                await self._ensure_created()

    async def _ensure_created(self) -> None:
        """Hook for file-based providers opened before their file existed (servers have nothing to create)."""
        return None

    async def _read_columns(self, table: str, schema: str | None, names: Sequence[str]) -> list[ColumnInfo]:
        """The columns a table read returns: the named ones (or all); an unknown table is the caller's error."""
        available = await self._target_columns(table, schema, names) if names else \
            await self._list_columns(table, schema)
        if not available:
            raise BadRequest(f"table '{table}' was not found", target="Table")
        return available

    async def _target_columns(self, table: str, schema: str | None, names: Sequence[str]) -> list[ColumnInfo]:
        """The destination's column descriptions for ``names`` (cached; DDL through this connector clears it)."""
        cached = self._columns_cache.get((schema, table))
        if cached is None:
            async with self._guard(f"reading the columns of {table}"):
                cached = await self._list_columns(table, schema)
            if not cached:
                raise BadRequest(f"table '{table}' was not found", target="Table")
            self._columns_cache[(schema, table)] = cached
        by_name = {c.name: c for c in cached}
        by_lower = {c.name.lower(): c for c in cached}
        result = []
        for name in names:
            column = by_name.get(name) or by_lower.get(name.lower())
            if column is None:
                raise BadRequest(f"column '{name}' is not in table '{table}'", target=name)
            result.append(column)
        return result

    def _ready(self, canonical: Sequence[CanonicalType | None] | None, target: list[ColumnInfo]) -> dict[str, Any]:
        """The ``ready`` argument of the write hooks (positions needing no conversion), for providers that use it."""
        if not self.skips_ready_columns or not canonical:
            return {}
        ready = values.ready_positions(canonical, [c.canonical for c in target])
        return {"ready": ready} if ready else {}

    def _scrub(self, message: str) -> str:
        return scrub(message, self._secrets)

    def _failure(self, exc: BaseException) -> ODataSyncError | None:
        """Map a driver exception to ConnectionFailed or BadRequest (None: not a driver error, let it propagate)."""
        if isinstance(exc, (*self.driver_errors, OSError)):
            return ConnectionFailed(self._scrub(f"{self.provider}: {_message(exc)}"))
        return None

    @asynccontextmanager
    async def _guard(self, what: str, *, started: float | None = None) -> AsyncIterator[None]:
        """Bound a driver call by the timeout and translate what the driver raises."""
        begun = started if started is not None else time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except ODataSyncError as exc:
            exc.message = self._scrub(exc.message)
            exc.args = (exc.message,)
            raise
        except TimeoutError:
            waited = time.monotonic() - begun
            raise ConnectionFailed(f"{self.provider}: {what} timed out after {waited:.1f} s "
                                   f"(timeout {self.timeout:g} s)") from None
        except Exception as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            raise failure from None

    # --- provider hooks ---------------------------------------------------------------------------------------------

    @abstractmethod
    async def _open(self, *, create_missing: bool = False) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _ping(self) -> None: ...

    @abstractmethod
    async def _list_tables(self, kind: str, schema: str | None) -> list[TableInfo]: ...

    @abstractmethod
    async def _list_columns(self, table: str, schema: str | None) -> list[ColumnInfo]: ...

    @abstractmethod
    async def _estimate_rows(self, table: str, schema: str | None) -> int | None: ...

    @abstractmethod
    async def _start_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                          where: list[Condition], order_by: list[str],
                          batch_size: int) -> tuple[list[ColumnInfo], BatchReader]: ...

    async def _create_table(self, table: str, columns: list[ColumnInfo], primary_key: list[str],
                            schema: str | None) -> list[TypeWarning]:
        raise BadRequest(f"{self.provider} connections cannot create tables")

    async def _add_column(self, table: str, column: ColumnInfo, schema: str | None) -> list[TypeWarning]:
        raise BadRequest(f"{self.provider} connections cannot add columns")

    async def _add_primary_key(self, table: str, key: list[str], schema: str | None) -> None:
        raise BadRequest(f"{self.provider} connections cannot add a primary key to a table")

    async def _write_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                           rows: Sequence[Sequence[Any]]) -> None:
        raise BadRequest(f"{self.provider} connections cannot write")

    async def _upsert_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                            rows: Sequence[Sequence[Any]], key: list[str]) -> WriteCounts:
        raise BadRequest(f"{self.provider} connections cannot write")

    async def _delete_keys(self, table: str, schema: str | None, key_columns: list[ColumnInfo],
                           keys: Sequence[Sequence[Any]]) -> int:
        raise BadRequest(f"{self.provider} connections cannot delete")

    async def _drop_table(self, table: str, schema: str | None) -> None:
        raise BadRequest(f"{self.provider} connections cannot drop tables")

    async def _truncate(self, table: str, schema: str | None) -> None:
        raise BadRequest(f"{self.provider} connections cannot truncate tables")

    async def _rename_table(self, table: str, new_name: str, schema: str | None) -> None:
        raise BadRequest(f"{self.provider} connections cannot rename tables")

    async def _swap_tables(self, first: str, second: str, schema: str | None) -> None:
        raise BadRequest(f"{self.provider} connections cannot swap tables")

    async def _execute(self, sql: str, params: list[Any]) -> int:
        raise BadRequest(f"{self.provider} connections do not run SQL statements")

    async def _begin(self) -> None:
        raise BadRequest(f"{self.provider} connections have no transactions")

    async def _begin_relaxed(self) -> None:
        """A transaction whose commit need not wait for the disk, where the database offers one."""
        await self._begin()

    async def _commit(self) -> None:
        raise BadRequest(f"{self.provider} connections have no transactions")

    async def _rollback(self) -> None:
        raise BadRequest(f"{self.provider} connections have no transactions")


def _check_widths(rows: Sequence[Sequence[Any]], width: int) -> None:
    for number, row in enumerate(rows, 1):
        if len(row) != width:
            raise BadRequest(f"row {number} has {len(row)} values for {width} columns")


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split()) if len(text) < 2000 else text[:2000]
