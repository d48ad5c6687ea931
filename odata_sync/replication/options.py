"""Replication options: the names a task's ``WITH`` clause and a job's ``OtherCacheOptions`` accept, and their values.

One table of option names and value parsers serves the REPLICATE parser (so a bad value is refused when the task is
written), the job settings and the merge of the two (a task's ``WITH`` wins over the job).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from odata_sync.errors import BadRequest

INTERVAL_UNITS = ("minutes", "hours", "days", "weeks", "months", "years")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_bool(value: Any, name: str) -> bool:
    """``true``/``false`` in any case (and 1/0, yes/no), or a JSON boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, got '{value}'", target=name)


def parse_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"{name} must be a positive integer, got '{value}'", target=name)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadRequest(f"{name} must be a positive integer, got '{value}'", target=name) from None
    if number < 1:
        raise BadRequest(f"{name} must be a positive integer, got '{value}'", target=name)
    return number


def parse_seconds(value: Any, name: str) -> float:
    try:
        seconds = float(str(value).strip())
    except ValueError:
        raise BadRequest(f"{name} must be a number of seconds, got '{value}'", target=name) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise BadRequest(f"{name} must be zero or a positive number of seconds, got '{value}'", target=name)
    return seconds


def parse_columns(value: Any, name: str) -> tuple[str, ...]:
    """``updated_at`` or ``a,b,c`` (the first one the source has wins); brackets or quotes around a name are removed."""
    names = []
    for part in str(value).split(","):
        part = part.strip()
        if len(part) >= 2 and (part[0], part[-1]) in (("[", "]"), ('"', '"'), ("`", "`")):
            part = part[1:-1]
        if part:
            names.append(part)
    if not names:
        raise BadRequest(f"{name} must name at least one column", target=name)
    return tuple(names)


def parse_unit(value: Any, name: str) -> str:
    unit = str(value).strip().lower()
    if unit and not unit.endswith("s"):
        unit += "s"  # 'day' -> 'days'
    if unit not in INTERVAL_UNITS:
        raise BadRequest(f"{name} must be one of {', '.join(INTERVAL_UNITS)}, got '{value}'", target=name)
    return unit


def parse_start(value: Any, name: str) -> str:
    """A start value is a date, a date and time, or an integer (for integer check columns); kept as text."""
    text = str(value).strip()
    if not text:
        raise BadRequest(f"{name} must not be empty", target=name)
    try:
        int(text)
        return text
    except ValueError:
        pass
    try:
        dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise BadRequest(f"{name} must be a date (yyyy-MM-dd), a date and time (yyyy-MM-dd hh:mm:ss) or an "
                         f"integer, got '{value}'", target=name) from None
    return text


@dataclass(frozen=True)
class Options:
    """Replication options as given (None: not given here, so the job's setting or the default applies)."""

    incremental_check_columns: tuple[str, ...] | None = None
    incremental_lookback: float | None = None
    drop_table: bool | None = None
    truncate_table: bool | None = None
    alter_schema: bool | None = None
    auto_truncate_strings: bool | None = None
    skip_deleted: bool | None = None
    batch_size: int | None = None
    replicate_start_date: str | None = None
    replicate_interval: int | None = None
    replicate_interval_unit: str | None = None

    def over(self, base: Options) -> Options:
        """These options, falling back to ``base`` for the ones not given."""
        return Options(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                          else getattr(base, f.name) for f in fields(self)})

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


#: Option name (as written, matched case-insensitively) -> (Options field, value parser). A bare option in a WITH
#: clause (``WITH DropTable``) means ``true``.
OPTIONS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "IncrementalCheckColumns": ("incremental_check_columns", parse_columns),
    "IncrementalCheckColumn": ("incremental_check_columns", parse_columns),
    "IncrementalLookback": ("incremental_lookback", parse_seconds),
    "DropTable": ("drop_table", parse_bool),
    "TruncateTable": ("truncate_table", parse_bool),
    "TruncateTableData": ("truncate_table", parse_bool),
    "AlterSchema": ("alter_schema", parse_bool),
    "AutoTruncateStrings": ("auto_truncate_strings", parse_bool),
    "SkipDeleted": ("skip_deleted", parse_bool),
    "BatchSize": ("batch_size", parse_positive_int),
    "ReplicateStartDate": ("replicate_start_date", parse_start),
    "ReplicateStartValue": ("replicate_start_date", parse_start),
    "ReplicateInterval": ("replicate_interval", parse_positive_int),
    "ReplicateIntervalUnit": ("replicate_interval_unit", parse_unit),
}
_BY_LOWER = {name.lower(): name for name in OPTIONS}
_BOOLEAN_FIELDS = frozenset(field for field, parser in OPTIONS.values() if parser is parse_bool)


def option_name(name: str) -> str | None:
    """The canonical spelling of an option name, or None when it is not a replication option."""
    return _BY_LOWER.get(name.strip().lower())


def is_boolean(name: str) -> bool:
    canonical = option_name(name)
    return canonical is not None and OPTIONS[canonical][0] in _BOOLEAN_FIELDS


def _known(pairs: list[tuple[str, Any]]) -> Options:
    """Options from ``(name, value)`` pairs; other names are left alone (OtherCacheOptions carries settings of other
    features too)."""
    values: dict[str, Any] = {}
    for name, value in pairs:
        canonical = option_name(name)
        if canonical is not None:
            field, parse = OPTIONS[canonical]
            values[field] = parse(value, canonical)
    return Options(**values)


def parse_other_cache_options(text: str | None) -> tuple[Options, dict[str, str]]:
    """``IncrementalCheckColumns=updated,modified,IncrementalLookback=30`` -> the replication options and every pair.

    Pairs are ``k=v`` separated by commas (or semicolons); a piece without ``=`` continues the previous value, so a
    column list needs no quoting.
    """
    pairs: list[list[str]] = []
    for piece in (text or "").replace(";", ",").split(","):
        if "=" in piece:
            name, _, value = piece.partition("=")
            if not name.strip():
                raise BadRequest(f"OtherCacheOptions has a value without a name: '{piece.strip()}'",
                                 target="OtherCacheOptions")
            pairs.append([name.strip(), value.strip()])
        elif piece.strip():
            if not pairs:
                raise BadRequest(f"OtherCacheOptions must be k=v pairs, got '{piece.strip()}'",
                                 target="OtherCacheOptions")
            pairs[-1][1] += "," + piece.strip()
    unquoted = [(k, v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v) for k, v in pairs]
    return _known(unquoted), dict(unquoted)
