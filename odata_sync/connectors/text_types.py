"""Types for untyped text (CSV): detect a column's canonical type from sample values, and parse values into it.

Detection is deliberately conservative: numbers with leading zeros stay text (postal codes, account numbers), only
``true``/``false`` are booleans, and a column whose samples disagree becomes text. A later value that does not fit
the detected type is an error naming the line, never a silent NULL or a rounded number.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from . import values
from .types import BINARY, BOOLEAN, DATE, FLOAT64, INT64, JSON, TEXT, TIME, TIMESTAMP, TIMESTAMPTZ, UUID, CanonicalType
from .types import decimal as decimal_type

_INT = re.compile(r"[+-]?(0|[1-9]\d*)")
_DEC = re.compile(r"[+-]?(0|[1-9]\d*)\.(\d+)")
_FLOAT = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)[eE][+-]?\d+|inf|nan|infinity)", re.IGNORECASE)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TS = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?")
_TSTZ = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s?(Z|[+-]\d{2}(:?\d{2})?)", re.IGNORECASE)
_TIME = re.compile(r"\d{2}:\d{2}:\d{2}(\.\d{1,9})?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"\\x(?:[0-9a-fA-F]{2})*")
_BOOLS = {"true", "false"}
_MIN_DECIMAL_PRECISION = 18
_INT64 = 2 ** 63


def _all(samples: Sequence[str], test: Callable[[str], Any]) -> bool:
    return all(test(s) for s in samples)


def _is_json(text: str) -> bool:
    if not text.startswith(("{", "[")):
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _valid(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            parse(text)
        except ValueError:
            return False
        return True
    return check


def detect(samples: Sequence[str]) -> CanonicalType:
    """The narrowest canonical type that every non-empty sample parses as (``text`` when none fits)."""
    samples = [s.strip() for s in samples if s != ""]
    if not samples:
        return TEXT
    if _all(samples, lambda s: s.lower() in _BOOLS):
        return BOOLEAN
    if _all(samples, _INT.fullmatch):
        if all(abs(int(s)) < _INT64 for s in samples):
            return INT64
        digits = max(len(s.lstrip("+-")) for s in samples)
        return decimal_type(max(digits, _MIN_DECIMAL_PRECISION), 0)
    if _all(samples, lambda s: _INT.fullmatch(s) or _DEC.fullmatch(s)):
        scale = max(len(m.group(2)) if (m := _DEC.fullmatch(s)) else 0 for s in samples)
        whole = max(len(s.lstrip("+-").split(".")[0]) for s in samples)
        return decimal_type(max(whole + scale, _MIN_DECIMAL_PRECISION), scale)
    if _all(samples, lambda s: _INT.fullmatch(s) or _DEC.fullmatch(s) or _FLOAT.fullmatch(s)):
        return FLOAT64
    if _all(samples, lambda s: _DATE.fullmatch(s) and _valid(dt.date.fromisoformat)(s)):
        return DATE
    if _all(samples, lambda s: (_TS.fullmatch(s) or _DATE.fullmatch(s)) and _valid(values.parse_datetime)(s)):
        return TIMESTAMP
    if _all(samples, lambda s: _TSTZ.fullmatch(s) and _valid(values.parse_datetime)(s)):
        return TIMESTAMPTZ
    if _all(samples, lambda s: _TIME.fullmatch(s) and _valid(dt.time.fromisoformat)(s)):
        return TIME
    if _all(samples, _UUID.fullmatch):
        return UUID
    if _all(samples, _HEX.fullmatch):
        return BINARY
    if _all(samples, _is_json):
        return JSON
    return TEXT


def _parse_decimal(ctype: CanonicalType) -> Callable[[str], decimal.Decimal]:
    whole_digits = (ctype.precision or 0) - (ctype.scale or 0)

    def parse(text: str) -> decimal.Decimal:
        value = decimal.Decimal(text)
        if not value.is_finite():
            raise ValueError("not a finite number")
        sign, digits, exponent = value.as_tuple()
        scale = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        if scale > (ctype.scale or 0) or len(digits) - scale > whole_digits:
            raise ValueError(f"does not fit {ctype}")
        return value
    return parse


def _parse_timestamp(text: str) -> dt.datetime:
    value = values.parse_datetime(text)
    if value.tzinfo is not None:
        raise ValueError("unexpected time zone offset")
    return value


def _parse_timestamptz(text: str) -> dt.datetime:
    value = values.parse_datetime(text.replace(" +", "+").replace(" -", "-"))
    if value.tzinfo is None:
        raise ValueError("no time zone offset")
    return value


def parser(ctype: CanonicalType) -> Callable[[str], Any]:
    """Text -> canonical value for ``ctype`` (ValueError when the text does not fit)."""
    kind = ctype.kind
    if kind == "boolean":
        return lambda s: {"true": True, "false": False}[s.strip().lower()] if s.strip().lower() in _BOOLS \
            else _raise(ValueError("not true/false"))
    if kind.startswith("int"):
        return lambda s: int(s) if _INT.fullmatch(s.strip()) else _raise(ValueError("not an integer"))
    if kind == "decimal":
        return _parse_decimal(ctype)
    if kind.startswith("float"):
        return float
    if kind == "date":
        return lambda s: dt.date.fromisoformat(s.strip())
    if kind == "timestamp":
        return _parse_timestamp
    if kind == "timestamptz":
        return _parse_timestamptz
    if kind == "time":
        return lambda s: dt.time.fromisoformat(s.strip())
    if kind == "uuid":
        return lambda s: uuid.UUID(s.strip())
    if kind == "binary":
        return lambda s: bytes.fromhex(s[2:]) if s.startswith("\\x") else _raise(ValueError("not \\x hex"))
    return str  # text, string and json keep the text as it is


def _raise(exc: Exception) -> Any:
    raise exc
