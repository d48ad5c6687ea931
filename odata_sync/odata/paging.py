"""Server-driven paging: an opaque, signed ``$skiptoken`` carrying the last row's sort-key values.

Keyset paging (rather than an offset) means a row inserted or deleted between two pages neither repeats another
row nor hides one. Nulls sort first ascending and last descending, on every store dialect.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from decimal import Decimal

import orjson
import sqlalchemy as sa

from odata_sync.errors import BadRequest


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"odata-sync skiptoken\0" + key).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:12]

    def encode(self, values: list, remaining_top: int | None) -> str:
        payload = orjson.dumps({"k": [_encode_value(v) for v in values], "t": remaining_top})
        return base64.urlsafe_b64encode(self._mac(payload) + payload).decode().rstrip("=")

    def decode(self, token: str) -> tuple[list, int | None]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as exc:
            raise BadRequest("Invalid $skiptoken", target="$skiptoken") from exc
        mac, payload = raw[:12], raw[12:]
        if len(raw) < 13 or not hmac.compare_digest(mac, self._mac(payload)):
            raise BadRequest("Invalid $skiptoken", target="$skiptoken")
        data = orjson.loads(payload)
        return [_decode_value(v) for v in data["k"]], data["t"]


def _encode_value(value):
    if isinstance(value, dt.datetime):
        return {"d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"n": str(value)}
    return value


def _decode_value(value):
    if isinstance(value, dict):
        if "d" in value:
            return dt.datetime.fromisoformat(value["d"])
        if "n" in value:
            return Decimal(value["n"])
    return value


def order_clauses(keys: list[tuple[sa.ColumnElement, bool]]) -> list:
    return [expr.desc().nulls_last() if desc else expr.asc().nulls_first() for expr, desc in keys]


def after(keys: list[tuple[sa.ColumnElement, bool]], values: list) -> sa.ColumnElement:
    """Rows strictly after ``values`` in the order of ``keys`` (expression, descending)."""
    if len(values) != len(keys):
        raise BadRequest("Invalid $skiptoken", target="$skiptoken")
    clauses, equal_so_far = [], []
    for (expr, desc), value in zip(keys, values, strict=True):
        if value is None:
            greater = sa.false() if desc else expr.is_not(None)
            equal = expr.is_(None)
        else:
            literal = sa.literal(value, expr.type)
            greater = sa.or_(expr < literal, expr.is_(None)) if desc else expr > literal
            equal = expr == literal
        clauses.append(sa.and_(*equal_so_far, greater))
        equal_so_far.append(equal)
    return sa.or_(*clauses)
