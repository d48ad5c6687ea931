"""Job and task settings from store rows, OtherCacheOptions, and which option wins; the planner's decisions."""

from __future__ import annotations

import datetime as dt

import pytest

from odata_sync.connectors import ColumnInfo
from odata_sync.connectors import types as ctypes
from odata_sync.errors import BadRequest
from odata_sync.replication import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LOOKBACK_SECONDS,
    JobSettings,
    Mode,
    Options,
    Target,
    TaskOptions,
    TaskSettings,
    parse_replicate,
)
from odata_sync.replication.options import parse_other_cache_options
from odata_sync.replication.planner import (
    add_interval,
    find_check_column,
    key_of,
    lookback,
    plan,
    window_containing,
    window_end,
)
from odata_sync.replication.state import DONE, LOADING, RECONCILING, WINDOWED, TableState, decode_mark, encode_mark


def test_job_settings_from_a_row_any_case_nulls_are_defaults():
    job = JobSettings.from_row({"jobname": "nightly", "SOURCE": "crm", "Destination": "dwh", "TableNamePrefix": "crm_",
                                "CacheSchema": "raw", "DropTable": "True", "truncatetabledata": False,
                                "AlterSchema": None, "ContinueOnError": "false", "SkipDeleted": 1, "BatchSize": "500",
                                "ReplicateStartDate": "2024-01-01", "ReplicateInterval": 3,
                                "ReplicateIntervalUnit": "Months", "OtherCacheOptions": "IncrementalCheckColumns=x"})
    assert job.job_name == "nightly" and job.source == "crm" and job.destination == "dwh"
    assert job.table_name_prefix == "crm_" and job.cache_schema == "raw"
    assert job.drop_table and not job.truncate_table_data and job.alter_schema and not job.continue_on_error
    assert job.skip_deleted and job.batch_size == 500
    assert (job.replicate_start_date, job.replicate_interval, job.replicate_interval_unit) == ("2024-01-01", 3,
                                                                                              "months")
    defaults = JobSettings.from_row({"JobName": "j"})
    assert defaults.alter_schema and defaults.continue_on_error and not defaults.drop_table
    assert defaults.batch_size is None and defaults.cache_schema is None and defaults.table_name_prefix == ""


@pytest.mark.parametrize("row, target", [
    ({"BatchSize": 0}, "BatchSize"),
    ({"BatchSize": "many"}, "BatchSize"),
    ({"DropTable": "sometimes"}, "DropTable"),
    ({"ReplicateIntervalUnit": "fortnights"}, "ReplicateIntervalUnit"),
    ({"ReplicateStartDate": "last tuesday"}, "ReplicateStartDate"),
    ({"OtherCacheOptions": "IncrementalLookback=-3"}, "IncrementalLookback"),
    ({"OtherCacheOptions": "justtext"}, "OtherCacheOptions"),
])
def test_bad_job_values_are_refused_with_their_name(row, target):
    with pytest.raises(BadRequest) as caught:
        JobSettings.from_row({"JobName": "j", **row})
    assert caught.value.target == target


def test_other_cache_options():
    options, pairs = parse_other_cache_options(
        "IncrementalCheckColumns=updated,modified, IncrementalLookback=30;SomethingElse='x,y',BatchSize=7")
    assert options == Options(incremental_check_columns=("updated", "modified"), incremental_lookback=30.0,
                              batch_size=7)
    assert pairs["SomethingElse"] == "x,y"
    assert parse_other_cache_options(None) == (Options(), {})
    assert parse_other_cache_options("") == (Options(), {})


def test_precedence_task_with_then_job_property_then_other_cache_options_then_default():
    job = JobSettings.from_row({"JobName": "j", "BatchSize": 100, "SkipDeleted": True,
                                "OtherCacheOptions": "IncrementalCheckColumns=changed,BatchSize=5,"
                                                     "IncrementalLookback=60"})
    plain = TaskOptions.resolve(job, parse_replicate("REPLICATE [t]"))
    assert plain.batch_size == 100  # the job's property wins over its OtherCacheOptions
    assert plain.check_columns == ("changed",) and plain.lookback_seconds == 60 and plain.skip_deleted
    task = TaskOptions.resolve(job, parse_replicate(
        "REPLICATE [t] WITH BatchSize=9, SkipDeleted=false, IncrementalCheckColumns='stamp', IncrementalLookback=0"))
    assert (task.batch_size, task.skip_deleted, task.check_columns, task.lookback_seconds) == (9, False, ("stamp",), 0)
    default = TaskOptions.resolve(JobSettings(), parse_replicate("REPLICATE [t]"))
    assert default.batch_size == DEFAULT_BATCH_SIZE and default.lookback_seconds == DEFAULT_LOOKBACK_SECONDS
    assert default.alter_schema and not default.drop_table and default.check_columns == ()
    truncate = TaskOptions.resolve(JobSettings(truncate_table_data=True), parse_replicate("REPLICATE [t]"))
    assert truncate.truncate_table
    assert not TaskOptions.resolve(JobSettings(truncate_table_data=True),
                                   parse_replicate("REPLICATE [t] WITH TruncateTable=false")).truncate_table


def test_job_flags_at_their_defaults_leave_other_cache_options_to_decide():
    """The store always holds the job's flags, so one at its default does not hide OtherCacheOptions' setting."""
    given = JobSettings.from_row({"DropTable": False, "AlterSchema": True, "SkipDeleted": False,
                                  "OtherCacheOptions": "DropTable=true,AlterSchema=false,SkipDeleted=true,"
                                                       "TruncateTableData=true,AutoTruncateStrings=true"})
    resolved = TaskOptions.resolve(given, parse_replicate("REPLICATE [t]"))
    assert (resolved.drop_table, resolved.alter_schema, resolved.skip_deleted, resolved.truncate_table,
            resolved.auto_truncate_strings) == (True, False, True, True, True)
    # a job flag away from its default still wins
    own = JobSettings.from_row({"AlterSchema": False, "OtherCacheOptions": "AlterSchema=true"})
    assert not TaskOptions.resolve(own, parse_replicate("REPLICATE [t]")).alter_schema


def test_task_settings_and_targets():
    task = TaskSettings.from_row({"TaskId": "7", "Index": 2, "Query": None, "Table": "Order Lines"})
    assert task.query == "REPLICATE [Order Lines]" and task.task_id == 7 and task.index == 2
    assert task.statement.target.name == "Order Lines"
    with pytest.raises(BadRequest):
        TaskSettings.from_row({"TaskId": 1})
    job = JobSettings(table_name_prefix="src_", cache_schema="raw")
    assert Target.of(job, parse_replicate("REPLICATE [dbo].[Orders]")) == Target("src_Orders", "raw")
    assert Target.of(job, parse_replicate("REPLICATE [stage].[D] SELECT 1")) == Target("src_D", "stage")
    assert Target.of(JobSettings(), parse_replicate("REPLICATE [D] SELECT 1")) == Target("D", None)


# --- the planner ---------------------------------------------------------------------------------------------------

def _col(name: str, kind: str = "int64", key: bool = False) -> ColumnInfo:
    return ColumnInfo.of(name, ctypes.CanonicalType(kind), primary_key=key)


def test_check_column_detection():
    columns = [_col("id", key=True), _col("note", "text"), _col("Modified_On", "timestamp"),
               _col("updated_at", "timestamptz")]
    assert find_check_column((), columns) == ("updated_at", None)
    assert find_check_column((), columns[:3]) == ("Modified_On", None)
    assert find_check_column((), [_col("updated_at", "text")]) == (None, None)  # text is not auto-detected
    assert find_check_column((), [_col("RowVersion", "binary")]) == ("RowVersion", None)
    assert find_check_column(("missing", "NOTE"), columns) == ("note", None)  # first listed one present wins
    name, warning = find_check_column(("missing",), columns)
    assert name is None and "missing" in warning
    name, warning = find_check_column(("flag",), [_col("flag", "boolean")])
    assert name is None and "boolean" in warning


def test_key_precedence():
    source = [_col("id", key=True), _col("x")]
    destination = [_col("id"), _col("x", key=True)]
    assert key_of(("x",), source, destination) == ("x",)
    assert key_of((), source, destination) == ("id",)
    assert key_of((), None, destination) == ("x",)
    assert key_of((), [_col("a")], None) == ()


def _state(phase: str = DONE, mark=5, check="updated_at", origin="o") -> TableState:
    return TableState("t", origin, phase, check, mark, ctypes.INT64)


@pytest.mark.parametrize("kwargs, state, mode, flags", [
    ({"key": ()}, _state(), Mode.REFRESH, {}),
    ({"options": TaskOptions(drop_table=True)}, _state(), Mode.LOAD, {"drop": True}),
    ({"exists": False}, None, Mode.LOAD, {}),
    ({"options": TaskOptions(truncate_table=True)}, _state(), Mode.LOAD, {"truncate": True}),
    ({}, None, Mode.RECONCILE, {}),
    ({}, _state(origin="other"), Mode.RECONCILE, {}),
    ({}, _state(LOADING), Mode.LOAD, {"truncate": True}),
    ({}, _state(RECONCILING), Mode.RECONCILE, {}),
    ({"force_full": True}, _state(), Mode.RECONCILE, {}),
    ({"check_column": None}, _state(), Mode.RECONCILE, {}),
    ({"check_column": "other"}, _state(), Mode.RECONCILE, {}),
    ({}, _state(mark=None), Mode.RECONCILE, {}),
    ({}, _state(), Mode.INCREMENTAL, {"resume_from": 5}),
    ({"exists": False, "options": TaskOptions(start="2024-01-01")}, None, Mode.WINDOWED, {}),
    ({"options": TaskOptions(start="2024-01-01")}, _state(WINDOWED, mark=9), Mode.WINDOWED, {"resume_from": 9}),
    ({"options": TaskOptions(start="2024-01-01")}, _state(), Mode.INCREMENTAL, {}),
])
def test_plan(kwargs, state, mode, flags):
    arguments = {"options": TaskOptions(), "key": ("id",), "check_column": "updated_at", "origin": "o",
                 "exists": True, "force_full": False, **kwargs}
    options = arguments.pop("options")
    chosen = plan(options, state=state, **arguments)
    assert chosen.mode is mode, chosen.reason
    for name, value in flags.items():
        assert getattr(chosen, name) == value
    assert chosen.reason


def test_lookback_and_windows():
    mark = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    assert lookback(mark, 5) == dt.datetime(2024, 5, 1, 11, 59, 55, 123456)
    assert lookback(dt.date(2024, 5, 2), 5) == dt.date(2024, 5, 2)
    assert lookback(dt.date(2024, 5, 2), 86400 * 2) == dt.date(2024, 4, 30)
    assert lookback(42, 5) == 42
    assert add_interval(dt.datetime(2024, 1, 31), 1, "months") == dt.datetime(2024, 2, 29)
    assert add_interval(dt.date(2023, 2, 28), 1, "years") == dt.date(2024, 2, 28)
    assert add_interval(dt.datetime(2024, 1, 1), 90, "minutes") == dt.datetime(2024, 1, 1, 1, 30)
    now = dt.datetime(2024, 4, 15, tzinfo=dt.UTC)
    assert window_end(dt.datetime(2024, 1, 1), 1, "months", now) == dt.datetime(2024, 2, 1)
    assert window_end(dt.datetime(2024, 3, 20), 1, "months", now) is None  # reaches past now: the open window
    assert window_end(dt.datetime(2024, 4, 1, tzinfo=dt.UTC), 6, "hours", now) == dt.datetime(2024, 4, 1, 6,
                                                                                              tzinfo=dt.UTC)
    assert window_end(dt.date(2024, 4, 1), 1, "weeks", now) == dt.date(2024, 4, 8)
    assert window_end(100, 10, "days", now) is None  # integer check columns: one open window
    assert window_end(dt.date(2024, 4, 1), None, "days", now) is None
    assert window_containing(dt.datetime(2020, 1, 1), dt.datetime(2023, 5, 17), 1, "years") == dt.datetime(2023, 1, 1)


@pytest.mark.parametrize("value, ctype", [
    (dt.datetime(2024, 5, 1, 12, 0, 0, 1), ctypes.TIMESTAMP),
    (dt.datetime(2024, 5, 1, 12, 0, 0, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-5))), ctypes.TIMESTAMPTZ),
    (dt.date(2024, 5, 1), ctypes.DATE),
    (12345678901234567, ctypes.INT64),
    (__import__("decimal").Decimal("123456789012345678.000001"), ctypes.decimal(30, 6)),
    (b"\x00\x01\xff", ctypes.BINARY),
])
def test_marks_are_stored_at_full_precision(value, ctype):
    decoded = decode_mark(encode_mark(value), ctype)
    assert decoded == value and type(decoded) is type(value)
    if isinstance(value, dt.datetime):
        assert decoded.utcoffset() == value.utcoffset()
