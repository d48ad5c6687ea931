"""Pass-through copies: rows go from the source to the destination in the databases' own bulk formats and never
become Python values of their types, which is what makes a copy as fast as the databases' own bulk tools.

The engine asks ``open_pipe`` for a pipe when it loads a whole table into a table it just emptied or created:
PostgreSQL → PostgreSQL (binary COPY), SQLite → SQLite (the source attached), SQLite → PostgreSQL (COPY text rendered
by SQLite) and PostgreSQL → SQLite (COPY text rendered by PostgreSQL). A pipe stores every value exactly as the normal
path would; where it cannot prove that for a column's types, there is no pipe. Each chunk of rows is committed on
its own as it arrives, like a batch of the normal path; ``chunks()`` yields the rows of each committed chunk, so the
caller reports progress and stops between chunks to cancel. ``stage_changes`` does the same for an incremental run's
changed rows (PostgreSQL → PostgreSQL).
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from odata_sync.concurrency import stop_tasks

from .base import ColumnInfo, Connector, WriteCounts

#: A chunk is at least this many rows (more when the batch size asks for more): a chunk's fixed cost (two COPY
#: statements and a commit) stays small next to its rows.
MIN_CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class Transfer:
    """What to copy: ``source_columns`` of the source table into ``columns`` of the destination table, position by
    position (names may differ)."""

    source_table: str
    source_schema: str | None
    source_columns: list[ColumnInfo]
    table: str
    schema: str | None
    columns: list[ColumnInfo]
    chunk_rows: int
    #: The check column (a source column name), whose highest value ``Pipe.highest`` is asked for after the copy: a
    #: pipe may find it while copying instead of scanning the table once more.
    check: str | None = None
    #: The source table's primary key (source column names, replicated or not).
    source_key: tuple[str, ...] = ()

    @property
    def check_copied(self) -> bool:
        """Whether the check column is one of the columns copied."""
        return any(c.name == self.check for c in self.source_columns)


class Pipe(ABC):
    """An open pass-through copy: ``async with`` it, iterate ``chunks()``, read ``highest`` of the check column."""

    #: How the rows travel, for the run's log.
    description = ""
    transfer: Transfer
    #: The check column's highest value, being read while the chunks are copied (``_read_meanwhile``).
    _meanwhile: asyncio.Future | None = None

    @abstractmethod
    async def start(self) -> None:
        """Open what the copy needs and cut the table into chunks (``open_pipe`` closes the pipe if this fails)."""

    @abstractmethod
    def chunks(self) -> AsyncIterator[int]:
        """The row count of each chunk, yielded once the chunk is committed in the destination."""

    @abstractmethod
    async def highest(self, column: str) -> Any:
        """The highest value of a source column in the rows copied (the same snapshot, or for the check column one
        taken before any row was read), None when there is none. The engine asks for the check column once the
        chunks are done."""

    @abstractmethod
    async def close(self) -> None:
        """Stop: a chunk in flight is rolled back; committed chunks stay."""

    def _read_meanwhile(self, reading: Awaitable[Any]) -> None:
        """Find the check column's highest value with ``reading`` while the chunks are copied."""
        self._meanwhile = asyncio.ensure_future(reading)

    def _found_meanwhile(self, column: str) -> asyncio.Future | None:
        """The reading started by ``_read_meanwhile``, when ``column`` is the check column."""
        return self._meanwhile if column == self.transfer.check else None

    async def _stop_meanwhile(self) -> None:
        """Stop the reading started by ``_read_meanwhile`` (``close`` calls this)."""
        reading, self._meanwhile = self._meanwhile, None
        if reading is not None:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def __aenter__(self) -> Pipe:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def can_pipe(source: Connector, destination: Connector) -> bool:
    """Whether a pipe may exist between these two connectors (the columns decide in ``open_pipe``)."""
    return (source.provider, destination.provider) in _PAIRS


async def open_pipe(source: Connector, destination: Connector, transfer: Transfer) -> Pipe | None:
    """A started pipe for ``transfer``, or None when the rows must go the normal way (the types differ, an unknown
    pair)."""
    factory = _factory(_PAIRS, source, destination, transfer)
    pipe = factory(source, destination, transfer) if factory is not None else None
    if pipe is None:
        return None
    try:
        await pipe.start()
    except BaseException:
        await pipe.close()
        raise
    return pipe


P = TypeVar("P")
R = TypeVar("R")
_END = object()


async def in_parallel(pairs: Sequence[P], ranges: list[R], copy: Callable[[P, R], Awaitable[int]]
                      ) -> AsyncIterator[int]:
    """Each of ``pairs`` (a reader and a writer) copies the next of ``ranges`` until none is left, all at once; the
    rows of each chunk as it commits. The first failure is raised once the other pairs are stopped."""
    done: asyncio.Queue[Any] = asyncio.Queue()

    async def work(pair: P) -> None:
        try:
            while ranges:
                done.put_nowait(await copy(pair, ranges.pop(0)))
            done.put_nowait(_END)
        except Exception as exc:
            done.put_nowait(exc)

    workers = [asyncio.create_task(work(pair)) for pair in pairs]
    try:
        running = len(workers)
        while running:
            item = await done.get()
            if item is _END:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        await stop_tasks(*workers)


class Staged(Protocol):
    """An incremental run's changed rows, staged in the destination in check-column order."""

    rows: int

    async def merge(self, first: int, rows: int, key: list[str]) -> tuple[WriteCounts, Any]:
        """Upsert staged rows ``first`` .. ``first + rows - 1`` in the caller's transaction: the counts and the
        highest check value among them."""

    async def drop(self) -> None:
        """Discard the staged rows."""


def can_stage(source: Connector, destination: Connector) -> bool:
    """Whether an incremental run's changes may pass through between these two connectors."""
    return (source.provider, destination.provider) in _STAGING


#: Gives the exported source snapshot that an incremental run's changed rows are read in.
Snapshot = Callable[[], Awaitable[str]]


async def stage_changes(source: Connector, destination: Connector, transfer: Transfer, check: int,
                        lower: Any, snapshot: Snapshot | None = None) -> Staged | None:
    """For an incremental run: the source rows whose column ``check`` (a position in ``transfer``) is at or above
    ``lower``, staged in the destination without becoming Python values; None when this pair or these columns
    cannot pass rows through. ``snapshot`` gives an exported source snapshot to read in, when the rows are read."""
    factory = _factory(_STAGING, source, destination, transfer)
    return await factory(source, destination, transfer, check, lower, snapshot) if factory is not None else None


def _factory(registry: dict[tuple[str, str], tuple[str, str]], source: Connector, destination: Connector,
             transfer: Transfer) -> Any:
    """The function ``registry`` names for this pair (its module imported when first used), or None."""
    found = registry.get((source.provider, destination.provider))
    if found is None or len(transfer.source_columns) != len(transfer.columns):
        return None
    module, name = found
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


#: (source provider, destination provider) -> module and function making the pipe.
_PAIRS = {("PostgreSQL", "PostgreSQL"): ("postgresql_pipe", "copy_pipe"),
          ("SQLite", "SQLite"): ("sqlite_pipe", "attach_pipe"),
          ("PostgreSQL", "SQLite"): ("pg_sqlite_pipe", "pg_sqlite_pipe"),
          ("SQLite", "PostgreSQL"): ("sqlite_pg_pipe", "text_copy_pipe")}
#: (source provider, destination provider) -> module and function staging an incremental run's changed rows.
_STAGING = {("PostgreSQL", "PostgreSQL"): ("postgresql_pipe", "stage_changes")}
