"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC
_fromisoformat = dt.datetime.fromisoformat


def _parse_text(value):
    return None if value is None else _fromisoformat(value)


def _aware(value):
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class UTCDateTime(TypeDecorator):
    """Aware UTC timestamps. PostgreSQL keeps a timestamptz; SQLite keeps fixed-width ISO-8601 text ending in 'Z'
    (``2024-01-01T02:00:00.000000Z``), which sorts chronologically, parses with one C call and is understood by
    SQLite's own date functions."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(27))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = _fromisoformat(value)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value

    def result_processor(self, dialect, coltype):
        return _parse_text if dialect.name == "sqlite" else _aware

    def process_result_value(self, value, dialect):  # used by literal/ad-hoc paths only
        if isinstance(value, str):
            return _fromisoformat(value)
        return _aware(value)


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)
