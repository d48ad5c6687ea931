"""Coercion of JSON and URL values to EDM primitive types, lenient where CData clients are (string numbers/booleans)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal, InvalidOperation

from odata_sync.errors import BadRequest

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_TRUE = {"true"}
_FALSE = {"false"}


def parse_datetime(text: str) -> dt.datetime:
    """ISO 8601 with 'Z' or an offset; a naive value (python-odata sends those) is taken as UTC."""
    value = text.strip()
    if len(value) >= 19 and value[10:11] in ("T", "t", " ") and value[-6:-5] == " " and value[-3:-2] == ":":
        value = value[:-6] + "+" + value[-5:]  # a raw '+' offset that arrived as a space
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def coerce(edm_type: str, value: object, what: str) -> object:
    """Return ``value`` as the Python value for ``edm_type``; raise BadRequest naming ``what`` otherwise."""
    if value is None:
        return None
    try:
        match edm_type:
            case "Edm.String":
                if isinstance(value, str):
                    if "\x00" in value:
                        raise BadRequest(f"Value for '{what}' contains a NUL character", target=what)
                    return value
            case "Edm.Int32" | "Edm.Int64":
                number = None
                if isinstance(value, int) and not isinstance(value, bool):
                    number = value
                elif isinstance(value, float) and value.is_integer():
                    number = int(value)
                elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                    number = int(value.strip())
                if number is not None:
                    low, high = INT32 if edm_type == "Edm.Int32" else INT64
                    if not low <= number <= high:
                        raise BadRequest(f"Value for '{what}' is out of range for {edm_type}", target=what)
                    return number
            case "Edm.Boolean":
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                    return value.strip().lower() in _TRUE
            case "Edm.DateTimeOffset":
                if isinstance(value, dt.datetime):
                    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
                if isinstance(value, str):
                    return parse_datetime(value)
            case "Edm.Guid":
                if isinstance(value, str):
                    return str(uuid.UUID(value))
            case "Edm.Double":
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return float(value)
                if isinstance(value, str):
                    return float(value)
            case "Edm.Decimal":
                if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                    return Decimal(str(value))
    except (ValueError, InvalidOperation) as exc:
        raise BadRequest(f"Value for '{what}' is not a valid {edm_type}", target=what) from exc
    raise BadRequest(f"Value for '{what}' must be {edm_type}, got {type(value).__name__}", target=what)


def check_int64(number: int, what: str) -> int:
    if not INT64[0] <= number <= INT64[1]:
        raise BadRequest(f"The number {number} in {what} is out of range for Edm.Int64", target=what)
    return number


def coerce_collection(edm_type: str, value: object, what: str) -> list:
    if not isinstance(value, list):
        raise BadRequest(f"Value for '{what}' must be a JSON array", target=what)
    return [coerce(edm_type, item, what) for item in value]
