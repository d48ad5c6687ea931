"""Value conversion: any reasonable input to the canonical Python value of a type, and text forms for storage.

Destinations call ``coercer(ctype)`` once per column and then apply it to every value of a batch, so the per-value
cost is one type check when the value is already canonical (the usual case between two typed databases).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from odata_sync.errors import BadRequest

from .types import CanonicalType

Converter = Callable[[Any], Any]
UTC = dt.UTC
_TRUE = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off"})


def _fail(value: Any, ctype: CanonicalType) -> BadRequest:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return BadRequest(f"cannot convert {shown} to {ctype}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, decimal.Decimal | float):
        if value != int(value):
            raise ValueError("not an integer")
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    raise TypeError


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, bool):
        return decimal.Decimal(int(value))
    if isinstance(value, int):
        return decimal.Decimal(value)
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    if isinstance(value, str):
        result = decimal.Decimal(value.strip())
        return result
    raise TypeError


def _to_float(value: Any) -> float:
    if isinstance(value, str):
        return float(value.strip())
    return float(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | decimal.Decimal):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    if isinstance(value, bytes) and len(value) == 1:
        return value != b"\x00"
    raise ValueError


def to_text(value: Any) -> str:
    """The text form of a canonical value, as written to text-only storage (CSV, text columns)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time | uuid.UUID | int):
        return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return to_json(value)
    return str(value)


def to_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=to_text, option=orjson.OPT_NON_STR_KEYS).decode()


def parse_datetime(text: str) -> dt.datetime:
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return dt.datetime.fromisoformat(text)


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        return dt.date.fromisoformat(text) if len(text) == 10 else parse_datetime(text).date()
    raise TypeError


def _to_time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value.replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.timedelta):  # MySQL TIME comes back as a timedelta
        seconds = value.total_seconds()
        if not 0 <= seconds < 86400:
            raise ValueError("time outside one day")
        return (dt.datetime.min + value).time()
    if isinstance(value, str):
        return dt.time.fromisoformat(value.strip())
    raise TypeError


def _to_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        return _to_timestamp(parse_datetime(value))
    raise TypeError


def _to_timestamptz(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return _to_timestamptz(parse_datetime(value))
    raise TypeError


def _to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes) and len(value) == 16:
        return uuid.UUID(bytes=value)
    return uuid.UUID(str(value).strip())


def _to_binary(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        if value.startswith("\\x"):
            return bytes.fromhex(value[2:])
        return value.encode()
    raise TypeError


def _to_string(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return to_text(value)
    return to_text(value)


_CANONICAL: dict[str, tuple[type | tuple[type, ...], Converter]] = {
    "int16": (int, _to_int), "int32": (int, _to_int), "int64": (int, _to_int),
    "decimal": (decimal.Decimal, _to_decimal), "float32": (float, _to_float), "float64": (float, _to_float),
    "boolean": (bool, _to_bool), "string": (str, _to_string), "text": (str, _to_string), "json": (str, to_json),
    "date": (dt.date, _to_date), "time": (dt.time, _to_time), "timestamp": (dt.datetime, _to_timestamp),
    "timestamptz": (dt.datetime, _to_timestamptz), "uuid": (uuid.UUID, _to_uuid), "binary": (bytes, _to_binary),
}
_EXACT_OK = {"int16", "int32", "int64", "decimal", "float32", "float64", "boolean", "string", "text", "json", "uuid",
             "binary"}


def coercer(ctype: CanonicalType) -> Converter:
    """A function turning a non-None value into the canonical Python value of ``ctype`` (BadRequest if impossible).

    When values of one Python type need no work, the function carries it as ``exact``: ``convert_rows`` then skips
    the call for those values, which is most of them between two typed databases.
    """
    exact, convert = _CANONICAL[ctype.kind]

    def coerce(value: Any) -> Any:
        try:
            return convert(value)
        except (ValueError, TypeError, ArithmeticError, binascii.Error):
            raise _fail(value, ctype) from None
    if ctype.kind in _EXACT_OK:
        coerce.exact = exact  # type: ignore[attr-defined]
    return coerce


def compose(*steps: Converter | None) -> Converter | None:
    """Chain converters, skipping None steps; None when there is nothing to do. Never called with None values.

    The chain keeps the first step's ``exact`` type only when it is the sole step.
    """
    active = [step for step in steps if step is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]

    def chained(value: Any) -> Any:
        for step in active:
            value = step(value)
        return value
    return chained


#: The Python class of each kind's canonical value (timestamps: naive or aware): a value canonical for one kind is
#: canonical for every kind of the same group, so it crosses between them untouched.
_GROUP = {"int16": "int", "int32": "int", "int64": "int", "decimal": "decimal", "float32": "float", "float64": "float",
          "boolean": "bool", "string": "str", "text": "str", "json": "str", "date": "date", "time": "time",
          "timestamp": "naive", "timestamptz": "aware", "uuid": "uuid", "binary": "bytes"}


def passes_as_is(incoming: CanonicalType | None, target: CanonicalType) -> bool:
    """Whether canonical values of ``incoming`` (as a source read returns them) are already canonical values of
    ``target``, so that a destination can skip ``coercer(target)`` for them."""
    return incoming is not None and _GROUP.get(incoming.kind, incoming.kind) == _GROUP.get(target.kind, target.kind)


def ready_positions(incoming: Sequence[CanonicalType | None] | None, targets: Sequence[CanonicalType]) -> frozenset[int]:
    """The positions whose values need no conversion to ``targets`` (see ``passes_as_is``); empty without a hint."""
    if not incoming or len(incoming) != len(targets):
        return frozenset()
    return frozenset(i for i, (a, b) in enumerate(zip(incoming, targets, strict=True)) if passes_as_is(a, b))


def convert_rows(rows: Sequence[Sequence[Any]], converters: Sequence[Converter | None]) -> list[tuple]:
    """Apply one converter per column (None: keep the value) to a batch of rows; returns tuples. NULLs stay NULL."""
    active = [(i, conv, getattr(conv, "exact", None)) for i, conv in enumerate(converters) if conv is not None]
    if not active:
        return [row if type(row) is tuple else tuple(row) for row in rows]
    out = []
    append = out.append
    for row in rows:
        values = list(row)
        for i, conv, exact in active:
            value = values[i]
            if value is not None and type(value) is not exact:
                values[i] = conv(value)
        append(tuple(values))
    return out


def b64decode(text: str) -> bytes:
    """OData Edm.Binary is base64url (some servers send standard base64)."""
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
