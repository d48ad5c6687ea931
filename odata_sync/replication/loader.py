"""Moving batches: a bounded read-ahead between the source and the destination, and the key sets that find the rows
the source no longer has."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, suppress
from typing import Any

from odata_sync.connectors import ColumnInfo, Connector
from odata_sync.connectors import values as cvalues

from . import dialect

#: Batches read ahead of the writer: memory is about batch size x (depth + 2) rows.
READ_AHEAD = 2
_DONE = object()


class ReadAhead:
    """Batches of a source read, fetched ahead of the writer (up to ``depth``) so reading the source overlaps writing
    the destination; a full queue suspends the reader, which is the back-pressure.

    Fetching starts at once (the first batch arrives while the destination table is being prepared), and closing it,
    even before any batch was taken, ends the source read cleanly: use ``async with``.
    """

    def __init__(self, batches: AsyncIterator[list[tuple]], depth: int = READ_AHEAD) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
        self._stop = self._finished = False
        self._task = asyncio.create_task(self._pump(batches))

    async def _pump(self, batches: AsyncIterator[list[tuple]]) -> None:
        try:
            async with aclosing(batches):
                async for batch in batches:
                    await self._queue.put(batch)
                    if self._stop:
                        return
            await self._queue.put(_DONE)
        except Exception as exc:  # handed to the consumer, which raises it in its own task
            if not self._stop:
                await self._queue.put(exc)

    def __aiter__(self) -> ReadAhead:
        return self

    async def __anext__(self) -> list[tuple]:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _DONE or isinstance(item, Exception):
            self._finished = True
            if item is _DONE:
                raise StopAsyncIteration
            raise item
        return item

    async def aclose(self) -> None:
        self._stop = self._finished = True
        while not self._queue.empty():  # free a put the pump may be blocked in, so that it sees ``stop`` and ends
            self._queue.get_nowait()
        if not self._task.done():
            if _being_cancelled():
                self._task.cancel()
            with suppress(Exception, asyncio.CancelledError):
                await self._task  # at most the fetch in flight: the source read is closed cleanly, in order

    async def __aenter__(self) -> ReadAhead:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def scratch_name(kind: str, table: str, schema: str | None) -> str:
    """A short, stable name for a task's scratch table (key sets, refresh staging), within identifier limits."""
    digest = hashlib.blake2b(f"{schema}\x1f{table}".encode(), digest_size=6).hexdigest()
    return f"_odsync_{kind}_{digest}"


class KeySet:
    """The source's keys, collected on the destination side to delete the rows whose key the source lacks.

    SQL destinations get a scratch table and one anti-join DELETE, so memory stays bounded whatever the table size;
    destinations without SQL (CSV) keep the keys in memory.
    """

    def __init__(self, destination: Connector, table: str, schema: str | None, key_columns: list[ColumnInfo]) -> None:
        self.destination = destination
        self.table, self.schema = table, schema
        self.columns = [ColumnInfo.of(c.name, c.canonical, nullable=False, primary_key=True) for c in key_columns]
        self.names = [c.name for c in self.columns]
        self.name = scratch_name("keys", table, schema)
        self.in_sql = destination.provider in dialect.SQL_DESTINATIONS
        self._memory: set[tuple[str, ...]] = set()

    async def create(self) -> None:
        """Start empty (a set left over by a killed run is dropped first). Outside any transaction."""
        if self.in_sql:
            await self.destination.drop_table(self.name, self.schema)
            await self.destination.create_table(self.name, self.columns, self.names, self.schema)
        self._memory.clear()

    async def add(self, keys: Sequence[tuple]) -> None:
        if not keys:
            return
        if self.in_sql:
            await self.destination.write_batch(self.name, self.names, keys, self.schema)
        else:
            self._memory.update(_text_key(k) for k in keys)

    async def delete_missing(self, batch_size: int) -> int:
        """Delete the destination rows whose key was not added; in the caller's transaction."""
        sql = dialect.delete_missing(self.destination.provider, self.table, self.name, self.schema, self.names)
        if sql is not None:
            return await self.destination.execute(sql)
        deleted = 0
        _cols, batches = await self.destination.read(self.table, batch_size, columns=self.names, schema=self.schema)
        doomed: list[tuple] = []
        async for batch in batches:
            doomed.extend(k for k in batch if _text_key(k) not in self._memory)
        for start in range(0, len(doomed), batch_size):
            deleted += await self.destination.delete_keys(self.table, self.names, doomed[start:start + batch_size],
                                                          self.schema)
        return deleted

    async def drop(self) -> None:
        self._memory.clear()
        if self.in_sql:
            await self.destination.drop_table(self.name, self.schema)


def _text_key(key: Sequence[Any]) -> tuple[str, ...]:
    return tuple("" if v is None else cvalues.to_text(v) for v in key)
