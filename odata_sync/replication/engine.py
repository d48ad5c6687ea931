"""The replication engine: run a job's tasks from a source connector into a destination connector, yielding progress.

    async for event in run_job(job, tasks, source, destination, force_full=False, cancel=stop_event):
        ...  # RunStarted, TaskStarted, BatchCommitted, TaskWarning, TaskFinished, RunFinished

No HTTP, no metadata store: the caller opens the connectors and persists the events. Every batch is written in one
destination transaction together with its checkpoint (the state row, see ``state``), so a run killed at any moment
leaves the destination at a committed state and the next run converges to an exact copy.

Rows travel as tuples in batches from the source's cursor to the destination's bulk path, the next batch being read
while the current one is written (``loader.ReadAhead``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, suppress
from typing import Any

from odata_sync.connectors import CanonicalType, ColumnInfo, Connector, WriteCounts, keydiff, passthrough, values
from odata_sync.connectors.sql import quote_ident
from odata_sync.errors import ODataSyncError

from . import schema as tables
from .loader import KeySet, ReadAhead, scratch_name
from .planner import Mode, Plan, find_check_column, key_of, lookback, plan, start_value, window_containing, window_end
from .progress import (
    CANCELLED,
    FAILED,
    FULL,
    SUCCESS,
    BatchCommitted,
    Progress,
    RunFinished,
    RunStarted,
    TaskFinished,
    TaskStage,
    TaskStarted,
    TaskWarning,
)
from .settings import JobSettings, Target, TaskOptions, TaskSettings
from .state import DONE, LOADING, RECONCILING, WINDOWED, StateTable, TableState

#: Sources that cannot sort rows: an incremental read from them advances the mark only when it is complete.
UNORDERED_SOURCES = frozenset({"CSV"})


async def run_job(job: JobSettings, tasks: Sequence[TaskSettings], source: Connector, destination: Connector, *,
                  force_full: bool = False, cancel: asyncio.Event | None = None,
                  run_id: str | None = None) -> AsyncIterator[Progress]:
    """Run ``tasks`` in Index order. A failed task stops the run unless ContinueOnError; setting ``cancel`` stops
    after the batch being written commits (the task and the run end CANCELLED)."""
    run_id = run_id or str(uuid.uuid4())
    started = time.monotonic()
    ordered = sorted(tasks, key=lambda t: (t.index is None, t.index or 0))
    yield RunStarted(run_id, job.job_name, len(ordered), force_full)
    finished: list[TaskFinished] = []
    status = SUCCESS
    for position, task in enumerate(ordered, 1):
        if cancel is not None and cancel.is_set():
            status = CANCELLED
            break
        runner = _TaskRun(job, task, task.index or position, source, destination, force_full, cancel)
        async with aclosing(runner.events()) as events:
            async for event in events:
                yield event
        result = runner.result
        assert result is not None
        finished.append(result)
        if result.status == CANCELLED:
            status = CANCELLED
            break
        if result.status == FAILED:
            status = FAILED
            if not job.continue_on_error:
                break
    yield RunFinished(run_id, status, tuple(finished), _ms(started))


async def _abandon(comparing: keydiff.KeyDiff | None) -> None:
    """Stop a key comparison the task no longer needs (its connections close)."""
    if comparing is not None:
        await comparing.abandon()


class _Cancelled(Exception):
    """The run was asked to stop; raised between committed batches."""


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _batch_max(batch: list[tuple], position: int | None) -> Any:
    if position is None:
        return None
    best = None
    for row in batch:
        value = row[position]
        if value is not None and (best is None or value > best):
            best = value
    return best


def _higher(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return b if b > a else a


class _TaskRun:
    """One task of one run: plans, moves the rows, counts, and reports."""

    def __init__(self, job: JobSettings, task: TaskSettings, index: int, source: Connector, destination: Connector,
                 force_full: bool, cancel: asyncio.Event | None) -> None:
        self.job, self.task, self.index = job, task, index
        self.source, self.destination = source, destination
        self.force_full, self.cancel = force_full, cancel
        self.result: TaskFinished | None = None
        self.inserted = self.updated = self.deleted = self.failed = self.rows_read = 0
        self.pending = 0  # rows of the batch being written (RecordsFailed if its write fails)
        self.estimate: int | None = None
        self.table_label = ""
        self.sync_type = FULL
        self._warnings: list[str] = []
        self._scratch: list[str] = []  # scratch tables to drop if the task fails
        self.added: list[str] = []  # columns added to the destination table by this run
        self.layout: tables.Layout | None = None
        # set by _plan, from the statement:
        self.options = TaskOptions()
        self.target = Target("")
        self.source_ref, self.source_schema, self.origin = "", None, ""
        self.states = StateTable(destination, None)
        self.exists = False
        self.keyless = False  # the destination table exists without a primary key
        self.defer_key = False  # a load creates the table without its key and adds it once the rows are in
        self.source_columns: list[ColumnInfo] | None = None  # a table source's columns (None for a SELECT)
        # what a load leaves for its final commit: the check column, its highest value, and whether the table still
        # has to be emptied (TruncateTableData with no rows read)
        self.loaded: tuple[str | None, Any, bool] = (None, None, False)
        self.check_type: CanonicalType | None = None

    # --- plumbing ---------------------------------------------------------------------------------------------------

    def warn(self, message: str) -> None:
        self._warnings.append(message)

    def _flush(self) -> list[TaskWarning]:
        pending, self._warnings = self._warnings, []
        return [TaskWarning(self.task.task_id, self.index, message) for message in pending]

    def _stage(self, stage: str) -> TaskStage:
        return TaskStage(self.task.task_id, self.index, stage)

    def _committed(self, rows: int) -> BatchCommitted:
        return BatchCommitted(self.task.task_id, self.index, rows, self.rows_read, self.estimate, self.inserted,
                              self.updated, self.deleted)

    def _upserted(self, rows: int, counts: WriteCounts) -> BatchCommitted:
        """Count a committed upsert batch of ``rows`` source rows; the event reporting it."""
        self.pending = 0
        self.rows_read += rows
        self.inserted += counts.inserted
        self.updated += counts.updated
        return self._committed(rows)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled

    async def events(self) -> AsyncIterator[Progress]:
        started = time.monotonic()
        status, error, completed = SUCCESS, None, False
        try:
            async for event in self._run():
                for warning in self._flush():
                    yield warning
                yield event
            completed = True
        except _Cancelled:
            status = CANCELLED
        except ODataSyncError as exc:
            status, error = FAILED, exc.message
            self.failed += self.pending
        finally:
            if not completed:
                await self._drop_scratch()
        for warning in self._flush():
            yield warning
        self.result = TaskFinished(self.task.task_id, self.index, self.task.query, self.table_label, status,
                                   self.sync_type, self.rows_read, self.inserted, self.updated, self.deleted,
                                   self.failed, _ms(started), error)
        yield self.result

    async def _drop_scratch(self) -> None:
        """Scratch tables of a task that did not finish (a killed run's are dropped when they are made again)."""
        for name in self._scratch:
            with suppress(ODataSyncError):
                await self.destination.drop_table(name, self.target.schema)

    async def _read(self, *, where: Sequence[tuple] = (), order_by: Sequence[str] = (),
                    columns: Sequence[str] | None = None) -> tuple[list[ColumnInfo], ReadAhead]:
        """Start reading the source; batches are fetched ahead at once. ``async with`` the reader to close it."""
        found, batches = await self.source.read(self.source_ref, self.options.batch_size, columns=columns,
                                                where=list(where), order_by=list(order_by), schema=self.source_schema)
        return found, ReadAhead(batches)

    # --- planning ---------------------------------------------------------------------------------------------------

    async def _run(self) -> AsyncIterator[Progress]:
        chosen, state = await self._plan()
        yield TaskStarted(self.task.task_id, self.index, self.task.query, self.table_label, chosen.sync_type,
                          chosen.mode.value, chosen.reason, self.estimate)
        modes = {Mode.LOAD: self._load, Mode.RECONCILE: self._reconcile, Mode.INCREMENTAL: self._incremental,
                 Mode.WINDOWED: self._windowed, Mode.REFRESH: self._refresh}
        async with aclosing(modes[chosen.mode](chosen, state)) as events:
            async for event in events:
                yield event
        if self.layout is not None:
            for column, count in self.layout.truncated.items():
                self.warn(f"AutoTruncateStrings: {count} values of column '{column}' were cut to fit")

    async def _plan(self) -> tuple[Plan, TableState | None]:
        """Resolve the statement and options, read the state and both sides' columns, and choose the mode."""
        statement = self.task.statement
        self.options = TaskOptions.resolve(self.job, statement)
        self.target = Target.of(self.job, statement)
        self.table_label = str(self.target)
        table = statement.source_table
        if table is not None:
            self.source_ref = table.name if self.source.provider == "CSV" else quote_ident(table.name)
            self.source_schema = table.schema
        else:
            self.source_ref, self.source_schema = statement.select or "", None
        self.origin = f"{self.job.source or self.source.provider}\x1f{table or statement.select}"
        self.states = StateTable(self.destination, self.target.schema)
        name, schema = self.target.name, self.target.schema

        async with self.destination.transaction():
            pass  # opening for writing creates a missing SQLite/DuckDB file or CSV folder (API: created when missing)
        await self.states.ensure()
        state = await self.states.load(name)
        self.exists = await self.destination.table_exists(name, schema)
        destination_columns = await self.destination.list_columns(name, schema) if self.exists else None
        source_columns = self.source_columns = await self.source.list_columns(self.source_ref, self.source_schema) \
            if table is not None else None
        # a SELECT's columns are known once it runs; until then the destination table mirrors them
        known = source_columns if source_columns is not None else destination_columns
        if known is not None:
            check, warning = find_check_column(self.options.check_columns, known)
            if warning:
                self.warn(warning)
        else:
            check = self.options.check_columns[0] if self.options.check_columns else None
        key = key_of(statement.primary_key, source_columns, destination_columns)
        self.keyless = destination_columns is not None and not any(c.primary_key for c in destination_columns)
        chosen = plan(self.options, key=key, check_column=check, state=state, origin=self.origin,
                      exists=self.exists, force_full=self.force_full)
        self.check_type = next((c.canonical for c in known or () if c.name == check), None)
        if chosen.mode is Mode.WINDOWED and self.check_type is None:
            self.warn("the check column's type is not known before the first run of a SELECT: loading in one pass "
                      "instead of ReplicateInterval windows")
            chosen = Plan(Mode.LOAD, chosen.reason, chosen.key, chosen.check_column, chosen.drop, chosen.truncate)
        if chosen.mode is Mode.REFRESH and check is not None:
            self.warn(f"check column '{check}' is not used: without a primary key rows cannot be merged")
        self.sync_type = chosen.sync_type
        if chosen.mode is not Mode.INCREMENTAL and table is not None:
            with suppress(ODataSyncError):
                self.estimate = await self.source.estimate_rows(self.source_ref, self.source_schema)
        return chosen, state

    async def _prepare(self, columns: list[ColumnInfo], chosen: Plan, *, create: bool) -> tables.Layout:
        """Create or evolve the destination table for the columns the read returned; the Layout to write with."""
        statement = self.task.statement
        name, schema = self.target.name, self.target.schema
        wanted, positions = tables.desired_columns(columns, statement.columns, chosen.key, self.destination.provider)
        if create:
            key = [] if self.defer_key else chosen.key
            for warning in await tables.create(self.destination, name, schema, wanted, key):
                self.warn(str(warning))
            present: list[ColumnInfo | None] = list(wanted)
        else:
            present, self.added = await tables.evolve(self.destination, name, schema, wanted,
                                                      self.options.alter_schema, self.warn)
        self.layout = tables.layout(wanted, positions, present, chosen.key, self.options.auto_truncate_strings,
                                    columns)
        return self.layout

    def _check_of(self, columns: list[ColumnInfo], chosen: Plan) -> tuple[str | None, int | None]:
        """The check column and its position in the rows read (re-detected on what a SELECT really returns)."""
        check = chosen.check_column
        if check is None or all(c.name != check for c in columns):
            check, _warning = find_check_column(self.options.check_columns, columns)
        position = next((i for i, c in enumerate(columns) if c.name == check), None)
        if position is not None:
            self.check_type = columns[position].canonical
        return (check if position is not None else None), position

    def _start_filter(self, chosen: Plan) -> list[tuple]:
        """With ReplicateStartDate, rows whose check value is below it are not replicated, in any mode."""
        if self.options.start is None or chosen.check_column is None or self.check_type is None:
            return []
        return [(chosen.check_column, ">=", start_value(self.options.start, self.check_type))]

    def _state(self, phase: str, check: str | None, mark: Any) -> TableState:
        return TableState(self.target.name, self.origin, phase, check, mark,
                          self.check_type if mark is not None else None)

    def _keyset(self, layout: tables.Layout) -> KeySet | None:
        if self.options.skip_deleted:
            return None
        keyset = KeySet(self.destination, self.target.name, self.target.schema,
                        [layout.columns[i] for i in layout.key_positions])
        if keyset.in_sql:
            self._scratch.append(keyset.name)
        return keyset

    # --- modes ------------------------------------------------------------------------------------------------------

    async def _load(self, chosen: Plan, state: TableState | None) -> AsyncIterator[Progress]:
        """Append everything into an empty table; the state says LOADING until the end, so a killed load is redone.

        A destination that can add a primary key later (PostgreSQL) gets a table without one, and the key's index is
        built from the loaded rows in the final commit: much cheaper than maintaining it row by row."""
        name, schema, destination = self.target.name, self.target.schema, self.destination
        await self.states.save(self._state(LOADING, chosen.check_column, None))
        if chosen.drop:
            await destination.drop_table(name, schema)
        create = chosen.drop or not self.exists
        redoing = state is not None and state.phase == LOADING and self.keyless
        self.defer_key = bool(chosen.key) and destination.defers_primary_key and (create or redoing)
        pipe = await self._open_pipe(chosen, create)
        loading = self._load_piped(pipe, chosen) if pipe is not None else \
            self._load_rows(chosen, create=create)
        async with aclosing(loading) as events:
            async for event in events:
                yield event
        check, mark, truncate = self.loaded
        if self.defer_key:
            yield self._stage("building the primary key")
        async with destination.transaction():
            if truncate:
                await destination.truncate(name, schema)
            if self.defer_key:
                assert self.layout is not None
                await destination.add_primary_key(name, self.layout.key, schema)
            await self.states.save(self._state(DONE, check, mark))

    async def _load_rows(self, chosen: Plan, *, create: bool) -> AsyncIterator[Progress]:
        """The load through Python: batches of tuples from the source's reader to the destination's bulk path."""
        name, schema, destination = self.target.name, self.target.schema, self.destination
        columns, batches = await self._read()
        truncate, mark = chosen.truncate, None
        async with batches:
            layout = await self._prepare(columns, chosen, create=create) if self.layout is None else self.layout
            check, position = self._check_of(columns, chosen)
            async for batch in batches:
                rows = layout.shape(batch)
                self.pending = len(rows)
                async with destination.transaction(durable=False):
                    if truncate:
                        await destination.truncate(name, schema)
                    await destination.write_batch(name, layout.names, rows, schema, canonical=layout.incoming)
                truncate, self.pending = False, 0
                mark = _higher(mark, _batch_max(batch, position))
                self.rows_read += len(batch)
                self.inserted += len(rows)
                yield self._committed(len(batch))
                self._check_cancel()
        self.loaded = (check, mark, truncate)

    async def _open_pipe(self, chosen: Plan, create: bool) -> passthrough.Pipe | None:
        """A same-engine pipe (``connectors.passthrough``) for loading this table, when the pair and the columns allow
        one; the destination table is prepared either way."""
        table, columns = self.task.statement.source_table, self.source_columns
        if table is None or columns is None or not passthrough.can_pipe(self.source, self.destination):
            return None
        layout = await self._prepare(columns, chosen, create=create)
        if layout.truncations:
            return None
        check, _position = self._check_of(columns, chosen)
        return await passthrough.open_pipe(self.source, self.destination, await self._transfer(layout, check))

    async def _transfer(self, layout: tables.Layout, check: str | None = None) -> passthrough.Transfer:
        """The layout's columns as a pass-through copy names them (a table source's and the destination's), and the
        check column."""
        table = self.task.statement.source_table
        assert table is not None and self.source_columns is not None
        by_name = {c.name: c for c in self.source_columns}
        ours = {c.name: c for c in await self.destination.list_columns(self.target.name, self.target.schema)}
        return passthrough.Transfer(table.name, self.source_schema, [by_name[n] for n in layout.source_names],
                                    self.target.name, self.target.schema, [ours[n] for n in layout.names],
                                    max(self.options.batch_size, passthrough.MIN_CHUNK_ROWS), check,
                                    tuple(c.name for c in self.source_columns if c.primary_key))

    async def _load_piped(self, pipe: passthrough.Pipe, chosen: Plan) -> AsyncIterator[Progress]:
        """The load through the pipe: the rows never become Python values."""
        check = pipe.transfer.check
        async with pipe:
            yield self._stage(f"copying without conversion: {pipe.description}")
            if chosen.truncate:
                await self.destination.truncate(self.target.name, self.target.schema)
            async for rows in pipe.chunks():
                self.rows_read += rows
                self.inserted += rows
                yield self._committed(rows)
                self._check_cancel()
            # of the copy's snapshot (or an older one): a row changed during the load is read again next time
            mark = await pipe.highest(check) if check is not None else None
        self.loaded = (check, mark, False)

    async def _reconcile(self, chosen: Plan, state: TableState | None) -> AsyncIterator[Progress]:
        """Re-read everything, upsert by key, then delete the keys the source did not return."""
        name, schema, destination = self.target.name, self.target.schema, self.destination
        await self.states.save(self._state(RECONCILING, chosen.check_column, None))
        columns, batches = await self._read(where=self._start_filter(chosen))
        mark, keyset = None, None
        async with batches:
            layout = await self._prepare(columns, chosen, create=False)
            check, position = self._check_of(columns, chosen)
            keyset = self._keyset(layout)
            if keyset is not None:
                await keyset.create()
            async for batch in batches:
                rows = layout.shape(batch)
                self.pending = len(rows)
                async with destination.transaction(durable=False):
                    counts = await destination.upsert_batch(name, layout.names, rows, layout.key, schema,
                                                            canonical=layout.incoming)
                    if keyset is not None:
                        await keyset.add(layout.keys(rows))
                mark = _higher(mark, _batch_max(batch, position))
                yield self._upserted(len(batch), counts)
                self._check_cancel()
        if keyset is not None:
            yield self._stage("deleting the rows the source no longer has")
        async with destination.transaction():
            if keyset is not None:
                self.deleted += await keyset.delete_missing(self.options.batch_size)
            await self.states.save(self._state(DONE, check, mark))
        if keyset is not None:
            await keyset.drop()

    async def _incremental(self, chosen: Plan, state: TableState | None) -> AsyncIterator[Progress]:
        """Upsert the rows whose check value is at or above the mark (minus the lookback), then delete by key.

        Read in check-column order, each batch's commit also advances the mark to the batch's highest value: every
        row below it has been committed. A source that cannot sort advances the mark only at the end."""
        assert state is not None and chosen.check_column is not None
        name, schema, destination = self.target.name, self.target.schema, self.destination
        check = chosen.check_column
        ordered = self.source.provider not in UNORDERED_SOURCES
        lower = lookback(chosen.resume_from, self.options.lookback_seconds)
        yield self._stage(f"reading rows with {check} >= {lower}")
        staged, comparing = await self._stage_changes(chosen, lower)
        if staged is not None or self.added:
            merging = self._merge_staged(staged, chosen, state, comparing) if staged is not None else \
                self._fill_new_columns(chosen, state)
            async with aclosing(merging) as events:
                async for event in events:
                    yield event
            return
        columns, batches = await self._read(where=[(check, ">=", lower)], order_by=[check] if ordered else [])
        async with batches:
            layout = await self._prepare(columns, chosen, create=False)
            if self.added:  # the rows already copied need the new columns' values too
                await batches.aclose()
                async for event in self._fill_new_columns(chosen, state):
                    yield event
                return
            check, position = self._check_of(columns, chosen)
            current = self._state(DONE, check, state.mark)
            seen = None
            comparing = self._compare_keys_meanwhile(layout, read_began=True)
            try:
                async for batch in batches:
                    rows = layout.shape(batch)
                    seen = _higher(seen, _batch_max(batch, position))
                    self.pending = len(rows)
                    async with destination.transaction(durable=False):
                        counts = await destination.upsert_batch(name, layout.names, rows, layout.key, schema,
                                                                canonical=layout.incoming)
                        if ordered and current.advanced(seen) is not current:
                            current = current.advanced(seen)
                            await self.states.save(current)
                    yield self._upserted(len(batch), counts)
                    self._check_cancel()
            except BaseException:
                await _abandon(comparing)
                raise
        async for event in self._remove_deleted(layout, current.advanced(seen), comparing):
            yield event

    async def _fill_new_columns(self, chosen: Plan, state: TableState) -> AsyncIterator[Progress]:
        """New source columns were added to the destination: every row is read again to fill them."""
        self.sync_type = FULL
        yield self._stage(f"new column(s) {', '.join(self.added)}: every row is read to fill them")
        async for event in self._reconcile(chosen, state):
            yield event

    def _compare_keys_meanwhile(self, layout: tables.Layout, *, read_began: bool) -> keydiff.KeyDiff | None:
        """Start looking for deleted keys while the changed rows are written (unless SkipDeleted), when the pair
        and the key are compared by ``connectors.keydiff``. ``read_began``: the caller's read of the changed rows
        has begun (else it says so later, or reads in the comparison's snapshot)."""
        comparison = self._key_comparison(layout)
        comparing = keydiff.KeyDiff.start(self.source, self.destination, comparison) if comparison else None
        if comparing is not None and read_began:
            comparing.read_began()
        return comparing

    async def _stage_changes(self, chosen: Plan, lower: Any
                             ) -> tuple[passthrough.Staged | None, keydiff.KeyDiff | None]:
        """The changed rows of a table source staged in the destination without becoming Python values
        (``passthrough.stage_changes``), when the pair and the columns allow it, and the key comparison started
        alongside; else (None, None): read them."""
        table, columns = self.task.statement.source_table, self.source_columns
        if table is None or columns is None or not passthrough.can_stage(self.source, self.destination):
            return None, None
        layout = await self._prepare(columns, chosen, create=False)
        check, _position = self._check_of(columns, chosen)
        if self.added or layout.truncations or check not in layout.source_names:
            return None, None  # (new columns: the caller reads every row to fill them)
        comparing = self._compare_keys_meanwhile(layout, read_began=False)
        try:  # read in the comparison's source snapshot, when there is one
            staged = await passthrough.stage_changes(self.source, self.destination, await self._transfer(layout),
                                                     layout.source_names.index(check), lower,
                                                     comparing.snapshot if comparing is not None else None)
        except BaseException:
            await _abandon(comparing)
            raise
        if staged is None:
            await _abandon(comparing)
            return None, None
        if comparing is not None:
            comparing.read_began()
        return staged, comparing

    async def _merge_staged(self, staged: passthrough.Staged, chosen: Plan, state: TableState,
                            comparing: keydiff.KeyDiff | None) -> AsyncIterator[Progress]:
        """The staged changes upserted a batch per commit, each with its highest check value as the mark."""
        assert self.layout is not None and self.source_columns is not None
        layout, destination = self.layout, self.destination
        check, _position = self._check_of(self.source_columns, chosen)
        canonical = values.coercer(self.check_type) if self.check_type is not None else None
        current, seen = self._state(DONE, check, state.mark), None
        try:
            yield self._stage(f"merging {staged.rows:,} changed rows copied without conversion")
            for first in range(0, staged.rows, self.options.batch_size):
                rows = min(self.options.batch_size, staged.rows - first)
                self.pending = rows
                async with destination.transaction(durable=False):
                    counts, highest = await staged.merge(first, rows, layout.key)
                    seen = _higher(seen, canonical(highest) if canonical and highest is not None else highest)
                    if current.advanced(seen) is not current:
                        current = current.advanced(seen)
                        await self.states.save(current)
                yield self._upserted(rows, counts)
                self._check_cancel()
        except BaseException:
            await _abandon(comparing)
            raise
        finally:
            with suppress(ODataSyncError):
                await staged.drop()
        async for event in self._remove_deleted(layout, current.advanced(seen), comparing):
            yield event

    async def _remove_deleted(self, layout: tables.Layout, final_state: TableState,
                              comparing: keydiff.KeyDiff | None = None) -> AsyncIterator[Progress]:
        """Delete the rows whose key the source no longer has (unless SkipDeleted) and save the final state, in one
        destination transaction. ``comparing``: the key comparison already under way."""
        keyset, doomed = None, None
        if not self.options.skip_deleted:
            try:
                yield self._stage("comparing keys with the source")
                if comparing is None:  # (the read is over)
                    comparing = self._compare_keys_meanwhile(layout, read_began=True)
                if comparing is not None:
                    doomed = await comparing.missing()
                else:
                    keyset = self._keyset(layout)
                    assert keyset is not None
                    await self._collect_keys(keyset, layout)
            except BaseException:
                await _abandon(comparing)
                raise
            self._check_cancel()
        async with self.destination.transaction():
            if keyset is not None:
                self.deleted += await keyset.delete_missing(self.options.batch_size)
            for start in range(0, 0 if doomed is None else len(doomed), self.options.batch_size):
                keys = [(key,) for key in doomed[start:start + self.options.batch_size].tolist()]
                self.deleted += await self.destination.delete_keys(self.target.name, layout.key, keys,
                                                                   self.target.schema)
            await self.states.save(final_state)
        if keyset is not None:
            await keyset.drop()

    def _key_comparison(self, layout: tables.Layout) -> keydiff.KeyComparison | None:
        """The key columns ``connectors.keydiff`` compares (deletes followed, one key column of a source table)."""
        table = self.task.statement.source_table
        if self.options.skip_deleted or table is None or self.source_columns is None or len(layout.key_positions) != 1:
            return None
        position = layout.key_positions[0]
        source_key = next((c for c in self.source_columns if c.name == layout.source_names[position]), None)
        if source_key is None:
            return None
        return keydiff.KeyComparison(table.name, self.source_schema, source_key, self.target.name,
                                     self.target.schema, layout.columns[position])

    async def _collect_keys(self, keyset: KeySet, layout: tables.Layout) -> None:
        """Every key the source has now, into the key set (scratch data: committed batch by batch)."""
        await keyset.create()
        names = [layout.source_names[i] for i in layout.key_positions]
        _columns, batches = await self._read(columns=names)
        async with batches:
            async for batch in batches:
                await keyset.add(batch)
                self._check_cancel()

    async def _windowed(self, chosen: Plan, state: TableState | None) -> AsyncIterator[Progress]:
        """Load ReplicateInterval windows of the check column from ReplicateStartDate, one transaction per window
        (its batches and the start of the next window as the mark); the last window is open-ended. An empty window
        jumps to the window holding the next check value, so a gap of years costs one query, not thousands."""
        assert chosen.check_column is not None and self.check_type is not None
        name, schema, destination = self.target.name, self.target.schema, self.destination
        check = chosen.check_column
        resuming = chosen.resume_from is not None
        lo = chosen.resume_from if resuming else start_value(self.options.start or "", self.check_type)
        if not resuming:
            await self.states.save(self._state(WINDOWED, check, lo))
        if chosen.drop:
            await destination.drop_table(name, schema)
        create = chosen.drop or not self.exists
        interval, unit = self.options.interval, self.options.interval_unit
        if interval is not None and not isinstance(lo, dt.date):
            self.warn("ReplicateInterval applies to date and time check columns: loading from the start value "
                      "in one window")
        layout: tables.Layout | None = None
        truncate, seen, now, last = chosen.truncate, None, dt.datetime.now(dt.UTC), False
        while True:
            hi = None if last else window_end(lo, interval, unit, now)
            yield self._stage(f"window {check} >= {lo}" + (f" and < {hi}" if hi is not None else ""))
            where = [(check, ">=", lo)] + ([(check, "<", hi)] if hi is not None else [])
            columns, batches = await self._read(where=where)
            window_rows = 0
            async with batches:
                if layout is None:
                    layout = await self._prepare(columns, chosen, create=create)
                _check, position = self._check_of(columns, chosen)
                async with destination.transaction(durable=False):
                    if truncate:
                        await destination.truncate(name, schema)
                    async for batch in batches:
                        rows = layout.shape(batch)
                        self.pending = len(rows)
                        counts = await destination.upsert_batch(name, layout.names, rows, layout.key, schema,
                                                                canonical=layout.incoming)
                        self.pending = 0
                        seen = _higher(seen, _batch_max(batch, position))
                        window_rows += len(batch)
                        self.inserted += counts.inserted
                        self.updated += counts.updated
                    if hi is not None:
                        await self.states.save(self._state(WINDOWED, check, hi))
            truncate = False
            self.rows_read += window_rows
            yield self._committed(window_rows)
            if hi is None:
                break
            self._check_cancel()
            lo = hi
            if not window_rows:
                following = await self._next_check_value(check, hi)
                if following is None:
                    last = True  # nothing further yet: the open window starts here
                elif interval is not None:
                    lo = window_containing(hi, following, interval, unit)
        assert layout is not None
        async for event in self._remove_deleted(layout, self._state(DONE, check, _higher(lo, seen))):
            yield event

    async def _next_check_value(self, check: str, at_least: Any) -> Any:
        """The lowest check value at or above ``at_least`` (None when there is none)."""
        ordered = self.source.provider not in UNORDERED_SOURCES
        _columns, batches = await self.source.read(self.source_ref, 1 if ordered else self.options.batch_size,
                                                   columns=[check], where=[(check, ">=", at_least)],
                                                   order_by=[check] if ordered else [], schema=self.source_schema)
        lowest = None
        async with aclosing(batches):
            async for batch in batches:
                values = [row[0] for row in batch if row[0] is not None]
                if values:
                    lowest = min(values) if lowest is None else min(lowest, *values)
                if ordered:
                    break
        return lowest

    async def _refresh(self, chosen: Plan, state: TableState | None) -> AsyncIterator[Progress]:
        """No key to merge on: copy everything into a staging table and swap it in atomically."""
        name, schema, destination = self.target.name, self.target.schema, self.destination
        staging = scratch_name("new", name, schema)
        self._scratch.append(staging)
        await destination.drop_table(staging, schema)  # left over by a killed run
        columns, batches = await self._read()
        async with batches:
            wanted, positions = tables.desired_columns(columns, self.task.statement.columns, (),
                                                       destination.provider)
            for warning in await tables.create(destination, staging, schema, wanted, ()):
                self.warn(str(warning))
            layout = self.layout = tables.layout(wanted, positions, list(wanted), (),
                                                 self.options.auto_truncate_strings, columns)
            async for batch in batches:
                rows = layout.shape(batch)
                self.pending = len(rows)
                await destination.write_batch(staging, layout.names, rows, schema, canonical=layout.incoming)
                self.pending = 0
                self.rows_read += len(batch)
                self.inserted += len(rows)
                yield self._committed(len(batch))
                self._check_cancel()
        yield self._stage("swapping in the refreshed table")
        if self.exists:
            await destination.swap_tables(name, staging, schema)
        else:
            await destination.rename_table(staging, name, schema)
        await destination.drop_table(staging, schema)
