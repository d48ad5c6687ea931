"""Deciding what a task does this run: full load, reconcile, incremental, windowed load or refresh.

Pure functions of what is known before reading (the options, the state row, whether the table exists, the columns):
easy to test, and the reason for the choice goes to the run log.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from odata_sync.connectors import ColumnInfo, values
from odata_sync.connectors import types as ctypes
from odata_sync.errors import BadRequest

from . import state as st
from .progress import FULL, INCREMENTAL
from .settings import TaskOptions


class Mode(StrEnum):
    LOAD = "load"  # full copy appended into an empty (new, dropped or truncated) table
    RECONCILE = "reconcile"  # full re-read, upserted by key; keys the source no longer has are deleted
    INCREMENTAL = "incremental"  # rows with check value >= mark - lookback, upserted by key; then deletes by key
    WINDOWED = "windowed"  # ReplicateStartDate/ReplicateInterval windows on the check column, one commit each
    REFRESH = "refresh"  # no key: full copy into a staging table, swapped in atomically


@dataclass(frozen=True)
class Plan:
    mode: Mode
    reason: str
    key: tuple[str, ...] = ()
    check_column: str | None = None
    drop: bool = False  # drop and re-create the table first (DropTable)
    truncate: bool = False  # empty the table in the first batch's transaction
    resume_from: Any = None  # INCREMENTAL: the stored mark; WINDOWED: the start of the next window

    @property
    def sync_type(self) -> str:
        return INCREMENTAL if self.mode is Mode.INCREMENTAL else FULL


#: Kinds a check column may have: values that grow with every change.
_ORDERED = frozenset({"int16", "int32", "int64", "decimal", "date", "timestamp", "timestamptz", "binary", "string",
                      "text", "float32", "float64", "time"})
_AUTO_KINDS = frozenset({"int32", "int64", "decimal", "date", "timestamp", "timestamptz", "binary"})
_AUTO_NAMES = [re.compile(p, re.IGNORECASE) for p in (
    r"updated_?at", r"updated_?on", r"last_?updated(_?at)?", r"last_?modified\w*", r"modified\w*",
    r"date_?modified", r"changed_?at", r"row_?version")]
_TEMPORAL = frozenset({"date", "timestamp", "timestamptz"})


def find_check_column(wanted: Sequence[str], columns: Sequence[ColumnInfo]) -> tuple[str | None, str | None]:
    """The check column among ``columns``: the first of ``wanted`` present (IncrementalCheckColumns), else the first
    column named like ``updated_at``, ``modified*``, ``last_modified*`` or ``rowversion`` with a growing type.
    Returns (name as the source spells it, warning or None)."""
    by_lower = {c.name.lower(): c for c in columns}
    if wanted:
        for name in wanted:
            column = by_lower.get(name.lower())
            if column is not None:
                if column.canonical.kind not in _ORDERED:
                    return None, (f"check column '{column.name}' has type {column.canonical}, which does not grow "
                                  "with changes: every run re-reads the whole table")
                return column.name, None
        return None, (f"none of the IncrementalCheckColumns ({', '.join(wanted)}) is a column of the source: every "
                      "run re-reads the whole table")
    for pattern in _AUTO_NAMES:
        for column in columns:
            if pattern.fullmatch(column.name) and column.canonical.kind in _AUTO_KINDS:
                return column.name, None
    return None, None


def key_of(explicit: Sequence[str], source: Sequence[ColumnInfo] | None,
           destination: Sequence[ColumnInfo] | None) -> tuple[str, ...]:
    """The key rows are matched on: PRIMARY KEY(...) in the statement, else the source's, else the destination's."""
    if explicit:
        return tuple(explicit)
    for columns in (source, destination):
        key = tuple(c.name for c in columns or () if c.primary_key)
        if key:
            return key
    return ()


def plan(options: TaskOptions, *, key: Sequence[str], check_column: str | None, state: st.TableState | None,
         origin: str, exists: bool, force_full: bool) -> Plan:
    """What to do this run (see ``Mode``); the first applicable rule wins."""
    key = tuple(key)
    windowed = options.start is not None and check_column is not None

    def fresh(reason: str, *, drop: bool = False, truncate: bool = False) -> Plan:
        mode = Mode.WINDOWED if windowed else Mode.LOAD
        if windowed:
            reason += f", in windows from ReplicateStartDate {options.start}"
        return Plan(mode, reason, key, check_column, drop=drop, truncate=truncate)

    if not key:
        return Plan(Mode.REFRESH, "no primary key: the table is refreshed as a whole and swapped in",
                    key, check_column)
    if options.drop_table:
        return fresh("DropTable: the table is dropped and loaded again", drop=True)
    if not exists:
        return fresh("first run: the table is created and loaded")
    if options.truncate_table:
        return fresh("TruncateTableData: the table is emptied and loaded again", truncate=True)
    if state is None:
        return Plan(Mode.RECONCILE, "no replication state for this table: every row is compared", key, check_column)
    if state.origin != origin:
        return Plan(Mode.RECONCILE, "the task's source changed: every row is compared", key, check_column)
    if state.phase == st.LOADING:
        return fresh("the previous full load did not finish: loading again", truncate=True)
    if force_full:
        return Plan(Mode.RECONCILE, "ForceFullSync: every row is read and compared", key, check_column)
    if state.phase == st.WINDOWED and windowed and state.check_column == check_column and state.mark is not None:
        return Plan(Mode.WINDOWED, f"resuming the windowed load at {state.mark}", key, check_column,
                    resume_from=state.mark)
    if state.phase != st.DONE:
        return Plan(Mode.RECONCILE, "the previous full load did not finish: every row is compared", key,
                    check_column)
    if check_column is None:
        return Plan(Mode.RECONCILE, "no check column: every row is read and compared", key, check_column)
    if state.check_column != check_column or state.mark is None:
        return Plan(Mode.RECONCILE, f"new check column '{check_column}': every row is compared", key, check_column)
    return Plan(Mode.INCREMENTAL, f"rows with {check_column} >= {state.mark} (minus the lookback)", key,
                check_column, resume_from=state.mark)


def lookback(mark: Any, seconds: float) -> Any:
    """The lower bound of an incremental read: the mark minus the lookback for temporal marks, else the mark."""
    if not seconds or mark is None:
        return mark
    delta = dt.timedelta(seconds=seconds)
    if isinstance(mark, dt.datetime):
        try:
            return mark - delta
        except OverflowError:
            return mark
    if isinstance(mark, dt.date):
        return mark - dt.timedelta(days=int(delta.total_seconds() // 86400))
    return mark


def start_value(text: str, ctype: ctypes.CanonicalType) -> Any:
    """ReplicateStartDate as a value of the check column's type."""
    try:
        return values.coercer(ctype)(text)
    except BadRequest:
        raise BadRequest(f"ReplicateStartDate '{text}' is not a value of the check column's type {ctype}",
                         target="ReplicateStartDate") from None


def add_interval(value: Any, count: int, unit: str) -> Any:
    if unit in ("months", "years"):
        months = count * (12 if unit == "years" else 1)
        month0 = value.month - 1 + months
        year, month = value.year + month0 // 12, month0 % 12 + 1
        day = min(value.day, calendar.monthrange(year, month)[1])
        return value.replace(year=year, month=month, day=day)
    if isinstance(value, dt.datetime) or unit in ("days", "weeks"):
        delta = {"minutes": dt.timedelta(minutes=count), "hours": dt.timedelta(hours=count),
                 "days": dt.timedelta(days=count), "weeks": dt.timedelta(weeks=count)}[unit]
        return value + delta
    return value + dt.timedelta(days=max(1, count // (24 * 60 if unit == "minutes" else 24)))  # dates by the day


def window_end(lo: Any, interval: int | None, unit: str, now: dt.datetime) -> Any:
    """The end of the ReplicateInterval window starting at ``lo``; None for the last, open-ended window (the one that
    reaches past ``now``, so rows stamped in the future are not missed). Integer check columns get one open window."""
    if interval is None or not isinstance(lo, dt.date):
        return None
    limit: Any = now.date()
    if isinstance(lo, dt.datetime):
        limit = now if lo.tzinfo else now.replace(tzinfo=None)
    hi = add_interval(lo, interval, unit)
    return None if hi > limit or hi <= lo else hi


def window_containing(lo: Any, value: Any, interval: int, unit: str) -> Any:
    """The start of the window (on the grid ``lo``, ``lo`` + interval, …) that holds ``value``."""
    while True:
        hi = add_interval(lo, interval, unit)
        if hi > value or hi <= lo:
            return lo
        lo = hi
