"""What the engine is told: a job's settings, its tasks, and each task's effective options.

The engine never reads the metadata store: the caller hands it plain dictionaries (a Jobs row, Tasks rows) and these
frozen dataclasses turn them into typed settings once. Property names are matched case-insensitively, and a None
value means the default (as the API treats nulls on create).

Precedence of an option, highest first: the task's ``WITH`` clause, the job's own property (DropTable, BatchSize…)
unless it is at its default, the job's ``OtherCacheOptions`` (IncrementalCheckColumns, IncrementalLookback…), the
default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from odata_sync.errors import BadRequest

from .options import Options, parse_bool, parse_other_cache_options, parse_positive_int, parse_start, parse_unit
from .statement import ReplicateStatement, bracket, parse_replicate

DEFAULT_BATCH_SIZE = 10_000
#: Seconds subtracted from the stored high-water mark of a temporal check column before the next read, so a row
#: whose transaction committed a little after a later-stamped row is still seen. Re-read rows that did not change
#: are neither written nor counted, so the cost of the overlap is reading a few seconds' worth of rows again.
DEFAULT_LOOKBACK_SECONDS = 5.0
DEFAULT_INTERVAL_UNIT = "days"


def _lookup(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in row.items()}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class JobSettings:
    """A job's replication settings (the Jobs properties of the API, typed)."""

    job_name: str = ""
    source: str | None = None
    destination: str | None = None
    table_name_prefix: str = ""
    cache_schema: str | None = None
    use_gmt_datetime: bool = False
    truncate_table_data: bool = False
    drop_table: bool = False
    alter_schema: bool = True
    auto_truncate_strings: bool = False
    continue_on_error: bool = True
    skip_deleted: bool = False
    batch_size: int | None = None
    command_timeout: int | None = None
    replicate_start_date: str | None = None
    replicate_interval: int | None = None
    replicate_interval_unit: str | None = None
    other_cache_options: str | None = None
    verbosity: int = 2

    def __post_init__(self) -> None:
        self.cache_options  # noqa: B018 - validate OtherCacheOptions now, not in the middle of a run

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobSettings:
        """Settings from a Jobs row or request body (CData property names, any case; None means the default)."""
        get = _lookup(row).get

        def flag(name: str, default: bool) -> bool:
            value = get(name.lower())
            return default if value is None else parse_bool(value, name)

        def number(name: str) -> int | None:
            value = get(name.lower())
            return None if value is None or value == "" else parse_positive_int(value, name)

        start = _text(get("replicatestartdate"))
        unit = _text(get("replicateintervalunit"))
        return cls(
            job_name=_text(get("jobname")) or "",
            source=_text(get("source")),
            destination=_text(get("destination")),
            table_name_prefix=get("tablenameprefix") or "",
            cache_schema=_text(get("cacheschema")),
            use_gmt_datetime=flag("UseGmtDateTime", False),
            truncate_table_data=flag("TruncateTableData", False),
            drop_table=flag("DropTable", False),
            alter_schema=flag("AlterSchema", True),
            auto_truncate_strings=flag("AutoTruncateStrings", False),
            continue_on_error=flag("ContinueOnError", True),
            skip_deleted=flag("SkipDeleted", False),
            batch_size=number("BatchSize"),
            command_timeout=number("CommandTimeout"),
            replicate_start_date=parse_start(start, "ReplicateStartDate") if start else None,
            replicate_interval=number("ReplicateInterval"),
            replicate_interval_unit=parse_unit(unit, "ReplicateIntervalUnit") if unit else None,
            other_cache_options=_text(get("othercacheoptions")),
            verbosity=number("Verbosity") or 2,
        )

    @cached_property
    def cache_options(self) -> Options:
        """The replication options in OtherCacheOptions (other keys there are left to other features)."""
        return parse_other_cache_options(self.other_cache_options)[0]

    @property
    def options(self) -> Options:
        """The job-level options: its own properties over its OtherCacheOptions. The store always holds a value for
        the job's flags, so a flag at its default is taken as not set: OtherCacheOptions may still set it."""
        defaults = {f.name: f.default for f in fields(self)}

        def given(name: str) -> Any:
            return None if getattr(self, name) == defaults[name] else getattr(self, name)

        own = Options(drop_table=given("drop_table"), truncate_table=given("truncate_table_data"),
                      alter_schema=given("alter_schema"), auto_truncate_strings=given("auto_truncate_strings"),
                      skip_deleted=given("skip_deleted"), batch_size=given("batch_size"),
                      replicate_start_date=given("replicate_start_date"),
                      replicate_interval=given("replicate_interval"),
                      replicate_interval_unit=given("replicate_interval_unit"))
        return own.over(self.cache_options)


@dataclass(frozen=True)
class TaskSettings:
    """One task: its REPLICATE query (built from ``Table`` when only that is given) and its place in the job."""

    query: str
    task_id: int | None = None
    index: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskSettings:
        get = _lookup(row).get
        query = _text(get("query"))
        if query is None:
            table = _text(get("table"))
            if table is None:
                raise BadRequest("a task needs a Query or a Table", target="Query")
            query = f"REPLICATE {bracket(table)}"
        task_id, index = get("taskid"), get("index")
        return cls(query=query, task_id=None if task_id is None else int(task_id),
                   index=None if index is None else int(index))

    @cached_property
    def statement(self) -> ReplicateStatement:
        return parse_replicate(self.query)


@dataclass(frozen=True)
class TaskOptions:
    """A task's effective options, every one resolved (the task's WITH over the job over the defaults)."""

    check_columns: tuple[str, ...] = ()  # empty: detect one
    lookback_seconds: float = DEFAULT_LOOKBACK_SECONDS
    drop_table: bool = False
    truncate_table: bool = False
    alter_schema: bool = True
    auto_truncate_strings: bool = False
    skip_deleted: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    start: str | None = None
    interval: int | None = None
    interval_unit: str = DEFAULT_INTERVAL_UNIT

    @classmethod
    def resolve(cls, job: JobSettings, statement: ReplicateStatement) -> TaskOptions:
        o = statement.options.over(job.options)
        return cls(
            check_columns=o.incremental_check_columns or (),
            lookback_seconds=DEFAULT_LOOKBACK_SECONDS if o.incremental_lookback is None else o.incremental_lookback,
            drop_table=bool(o.drop_table), truncate_table=bool(o.truncate_table),
            alter_schema=True if o.alter_schema is None else o.alter_schema,
            auto_truncate_strings=bool(o.auto_truncate_strings), skip_deleted=bool(o.skip_deleted),
            batch_size=o.batch_size or DEFAULT_BATCH_SIZE, start=o.replicate_start_date,
            interval=o.replicate_interval, interval_unit=o.replicate_interval_unit or DEFAULT_INTERVAL_UNIT)


@dataclass(frozen=True)
class Target:
    """Where a task writes: ``TableNamePrefix`` + the statement's table, in its schema or the job's CacheSchema.

    ``REPLICATE [s].[T]`` reads ``s.T`` and writes ``T`` into CacheSchema (the source's schema seldom exists on the
    destination); ``REPLICATE [s].[D] SELECT …`` names its destination schema explicitly.
    """

    name: str
    schema: str | None = None

    @classmethod
    def of(cls, job: JobSettings, statement: ReplicateStatement) -> Target:
        schema = statement.target.schema if statement.select is not None else None
        return cls(name=job.table_name_prefix + statement.target.name, schema=schema or job.cache_schema)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name
