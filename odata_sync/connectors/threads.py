"""One dedicated thread per blocking connection (sqlite3, duckdb), so the event loop never blocks.

Those drivers want every call on the thread that opened the connection; a one-worker executor gives exactly that and
serialises calls. When the awaiting task is cancelled (a timeout), the running statement is interrupted through the
driver's thread-safe ``interrupt()`` so the thread is free again soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .base import WriteCounts
from .sql import delete_statement, merge_statements

T = TypeVar("T")


class ConnectionThread:
    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.interrupt: Callable[[], None] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if self.interrupt is not None and not future.done():
                with contextlib.suppress(Exception):
                    self.interrupt()
            future.add_done_callback(_consume)
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=False)


def _consume(future: asyncio.Future) -> None:
    """Retrieve an abandoned call's outcome so asyncio does not log 'exception was never retrieved'."""
    if not future.cancelled():
        future.exception()


class ThreadedTableOps:
    """Table operations shared by the providers whose driver runs on a ``ConnectionThread`` (SQLite, DuckDB): the
    same SQL works on both. Subclasses give ``_run``, ``conn``, ``_target``, ``_quote``, ``_stage`` (a temp table
    holding rows), ``_count`` (a statement's affected rows) and ``_distinct`` (the null-safe inequality)."""

    _spare_ids = itertools.count(1)
    _distinct = "{} IS DISTINCT FROM {}"
    _rowid_delete = False

    async def _upsert_batch(self, table: str, schema: str | None, columns: list, rows, key: list[str]):
        names = [c.name for c in columns]
        key = [next(n for n in names if n.lower() == k.lower()) for k in key]

        def upsert() -> WriteCounts:
            stage = self._stage(table, schema, columns, rows)
            try:
                delete, insert = merge_statements(self._target(table, schema), stage, names, key, self._quote,
                                                  lambda a, b, _c: self._distinct.format(a, b),
                                                  rowid_delete=self._rowid_delete)
                updated = self._count(delete)
                written = self._count(insert)
            finally:
                self.conn.execute(f"DROP TABLE IF EXISTS {stage}")
            return WriteCounts(inserted=written - updated, updated=updated)
        return await self._run(upsert)

    async def _delete_keys(self, table: str, schema: str | None, key_columns: list, keys) -> int:
        def delete() -> int:
            stage = self._stage(table, schema, key_columns, keys)
            try:
                return self._count(delete_statement(self._target(table, schema), stage,
                                                    [c.name for c in key_columns], self._quote,
                                                    rowid_delete=self._rowid_delete))
            finally:
                self.conn.execute(f"DROP TABLE IF EXISTS {stage}")
        return await self._run(delete)

    async def _drop_table(self, table: str, schema: str | None) -> None:
        await self._run(self.conn.execute, f"DROP TABLE IF EXISTS {self._target(table, schema)}")

    async def _truncate(self, table: str, schema: str | None) -> None:
        await self._run(self.conn.execute, f"DELETE FROM {self._target(table, schema)}")

    async def _rename_table(self, table: str, new_name: str, schema: str | None) -> None:
        await self._run(self.conn.execute,
                        f"ALTER TABLE {self._target(table, schema)} RENAME TO {self._quote(new_name)}")

    async def _add_column(self, table: str, column, schema: str | None) -> list:
        from .types import TypeWarning, to_native

        native = to_native(self.provider, column.canonical)
        await self._run(self.conn.execute, f"ALTER TABLE {self._target(table, schema)} "
                                           f"ADD COLUMN {self._quote(column.name)} {native.ddl}")
        return [TypeWarning(self.provider, column.name, str(column.canonical), native.ddl, native.lossy)] \
            if native.lossy else []

    async def _swap_tables(self, first: str, second: str, schema: str | None) -> None:
        spare = f"_odsync_swap_{next(self._spare_ids)}"
        for old, new in ((first, spare), (second, first), (spare, second)):
            await self._rename_table(old, new, schema)
