"""Canonical column types, and the one mapping between them and each provider's native types.

Every connector describes columns with a ``CanonicalType`` and moves values as the canonical Python value of that
type, so a source and a destination never need to know about each other:

=============  ==========================================  =============================================
kind           parameters                                  Python value
=============  ==========================================  =============================================
int16/32/64                                                ``int``
decimal        precision, scale (None: unconstrained)      ``decimal.Decimal``
float32/64                                                 ``float``
boolean                                                    ``bool``
string         length                                      ``str``
text                                                       ``str``
date                                                       ``datetime.date``
time                                                       ``datetime.time`` (naive)
timestamp                                                  ``datetime.datetime`` (naive)
timestamptz                                                ``datetime.datetime`` (aware)
uuid                                                       ``uuid.UUID``
json                                                       ``str`` holding the JSON text
binary                                                     ``bytes``
=============  ==========================================  =============================================

Mapping canonical to native never loses data silently: ``to_native`` returns the DDL text together with a reason
whenever the provider cannot keep the type (a ``TypeWarning`` once attached to a column).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KINDS = ("int16", "int32", "int64", "decimal", "float32", "float64", "boolean", "string", "text", "date", "time",
         "timestamp", "timestamptz", "uuid", "json", "binary")


@dataclass(frozen=True)
class CanonicalType:
    """A provider-independent column type (``length`` for strings, ``precision``/``scale`` for decimals).

    ``tz`` mirrors the kind: ``CanonicalType("timestamp", tz=True)`` is the same type as ``CanonicalType("timestamptz")``.
    """

    kind: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    tz: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown canonical type kind {self.kind!r}")
        if self.kind == "timestamp" and self.tz:
            object.__setattr__(self, "kind", "timestamptz")
        object.__setattr__(self, "tz", self.kind == "timestamptz")

    @property
    def is_integer(self) -> bool:
        return self.kind in ("int16", "int32", "int64")

    @property
    def is_textual(self) -> bool:
        return self.kind in ("string", "text", "json")

    def __str__(self) -> str:
        if self.kind == "decimal" and self.precision is not None:
            return f"decimal({self.precision},{self.scale or 0})"
        if self.kind == "string" and self.length is not None:
            return f"string({self.length})"
        return self.kind


def decimal(precision: int | None = None, scale: int | None = None) -> CanonicalType:
    return CanonicalType("decimal", precision=precision, scale=scale if precision is not None else None)


def string(length: int | None = None) -> CanonicalType:
    return CanonicalType("string", length=length) if length else CanonicalType("text")


INT16, INT32, INT64 = CanonicalType("int16"), CanonicalType("int32"), CanonicalType("int64")
FLOAT32, FLOAT64 = CanonicalType("float32"), CanonicalType("float64")
BOOLEAN, TEXT, DATE, TIME = CanonicalType("boolean"), CanonicalType("text"), CanonicalType("date"), CanonicalType("time")
TIMESTAMP, TIMESTAMPTZ = CanonicalType("timestamp"), CanonicalType("timestamptz")
UUID, JSON, BINARY = CanonicalType("uuid"), CanonicalType("json"), CanonicalType("binary")


@dataclass(frozen=True)
class NativeType:
    """A provider's DDL type text for a canonical type, with the reason when the mapping loses something."""

    ddl: str
    lossy: str | None = None


@dataclass(frozen=True)
class TypeWarning:
    """A lossy mapping reported to the caller (the run log shows it); the data is still written."""

    provider: str
    column: str | None
    canonical: str
    stored_as: str
    reason: str

    def __str__(self) -> str:
        where = f"column '{self.column}'" if self.column else "table"
        return f"{self.provider}: {where} ({self.canonical}) stored as {self.stored_as}: {self.reason}"


_PARAMS = re.compile(r"\(\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?\)")


def _split(native: str) -> tuple[str, int | None, int | None, str]:
    """``'numeric(18, 4)'`` -> ``('numeric', 18, 4, 'numeric')``; the last item is the name with parameters removed."""
    text = " ".join(native.strip().lower().split())
    match = _PARAMS.search(text)
    first = int(match.group(1)) if match else None
    second = int(match.group(2)) if match and match.group(2) is not None else None
    bare = _PARAMS.sub("", text).strip() if match else text
    base = bare.split(" ")[0] if bare else ""
    return base, first, second, bare


# --- PostgreSQL ----------------------------------------------------------------------------------------------------

_PG_SIMPLE = {
    "smallint": INT16, "int2": INT16, "integer": INT32, "int": INT32, "int4": INT32, "bigint": INT64, "int8": INT64,
    "oid": INT64, "real": FLOAT32, "float4": FLOAT32, "double precision": FLOAT64, "float8": FLOAT64,
    "boolean": BOOLEAN, "bool": BOOLEAN, "text": TEXT, "citext": TEXT, "name": CanonicalType("string", length=63),
    "date": DATE, "uuid": UUID, "json": JSON, "jsonb": JSON, "bytea": BINARY, "xml": TEXT,
    "time without time zone": TIME, "time": TIME,
    "timestamp without time zone": TIMESTAMP, "timestamp": TIMESTAMP,
    "timestamp with time zone": TIMESTAMPTZ, "timestamptz": TIMESTAMPTZ,
}

#: PostgreSQL types whose values asyncpg already decodes into the canonical Python value; others are read as text.
PG_NATIVE_DECODED = frozenset(_PG_SIMPLE) | {"numeric", "decimal", "character varying", "varchar", "character", "char",
                                             "bpchar", '"char"'}


def pg_to_canonical(native: str) -> CanonicalType:
    if native.rstrip().endswith("]"):
        return JSON  # arrays travel as JSON text
    base, first, second, bare = _split(native)
    if bare in _PG_SIMPLE:
        return _PG_SIMPLE[bare]
    if base in ("numeric", "decimal"):
        return decimal(first, second or 0) if first is not None else decimal()
    if bare in ("character varying", "varchar"):
        return string(first)
    if bare in ("character", "char", "bpchar"):
        return string(first or 1)
    if bare == '"char"':
        return CanonicalType("string", length=1)
    return TEXT


def pg_from_canonical(t: CanonicalType) -> NativeType:
    k = t.kind
    if k == "decimal":
        if t.precision is None:
            return NativeType("numeric")
        if t.precision > 1000:
            return NativeType("numeric", "precision above PostgreSQL's 1000 digits; stored as unconstrained numeric")
        return NativeType(f"numeric({t.precision},{t.scale or 0})")
    if k == "string":
        if t.length and t.length <= 10_485_760:
            return NativeType(f"varchar({t.length})")
        return NativeType("text")
    return NativeType({
        "int16": "smallint", "int32": "integer", "int64": "bigint", "float32": "real", "float64": "double precision",
        "boolean": "boolean", "text": "text", "date": "date", "time": "time", "timestamp": "timestamp",
        "timestamptz": "timestamptz", "uuid": "uuid", "json": "jsonb", "binary": "bytea",
    }[k])


# --- MySQL / MariaDB -----------------------------------------------------------------------------------------------

def mysql_to_canonical(native: str) -> CanonicalType:
    base, first, second, bare = _split(native)
    unsigned = "unsigned" in bare.split()
    if base in ("tinyint", "bool", "boolean"):
        return BOOLEAN if base != "tinyint" or first == 1 else INT16
    if base == "smallint":
        return INT32 if unsigned else INT16
    if base in ("mediumint", "year"):
        return INT32 if base == "mediumint" else INT16
    if base in ("int", "integer"):
        return INT64 if unsigned else INT32
    if base == "bigint":
        return decimal(20, 0) if unsigned else INT64
    if base in ("decimal", "numeric", "dec", "fixed"):
        return decimal(first or 10, second or 0)
    if base == "float":
        return FLOAT32 if first is None or first <= 24 else FLOAT64
    if base in ("double", "real"):
        return FLOAT64
    if base == "bit":
        return BOOLEAN if (first or 1) == 1 else INT64
    if base in ("char", "varchar", "nchar", "nvarchar"):
        return string(first)
    if base in ("tinytext", "text", "mediumtext", "longtext", "enum", "set", "inet4", "inet6"):
        return TEXT
    if base == "json":
        return JSON
    if base in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry"):
        return BINARY
    if base == "uuid":
        return UUID
    return {"date": DATE, "time": TIME, "datetime": TIMESTAMP, "timestamp": TIMESTAMPTZ}.get(base, TEXT)


def mysql_from_canonical(t: CanonicalType, *, key: bool = False) -> NativeType:
    k = t.kind
    if k == "decimal":
        if t.precision is None:
            return NativeType("DECIMAL(65,30)", "unconstrained decimal stored as DECIMAL(65,30): digits beyond are rounded")
        if t.precision > 65:
            scale = min(t.scale or 0, 30)
            return NativeType(f"DECIMAL(65,{scale})", f"precision {t.precision} is above MySQL's 65 digits")
        if (t.scale or 0) > 30:
            return NativeType(f"DECIMAL({t.precision},30)", f"scale {t.scale} is above MySQL's 30 digits")
        return NativeType(f"DECIMAL({t.precision},{t.scale or 0})")
    if k == "string":
        if t.length and t.length <= 255:
            return NativeType(f"VARCHAR({t.length})")
        if key:
            return NativeType("VARCHAR(768)", "key column limited to 768 characters (index length limit)")
        return NativeType("LONGTEXT")
    if k == "text" and key:
        return NativeType("VARCHAR(768)", "key column limited to 768 characters (index length limit)")
    if k == "binary" and key:
        return NativeType("VARBINARY(3072)", "key column limited to 3072 bytes (index length limit)")
    if k == "uuid":
        return NativeType("CHAR(36)", "MySQL has no UUID type: stored as CHAR(36) text and read back as a string")
    if k == "timestamptz":
        return NativeType("DATETIME(6)", "MySQL DATETIME keeps no time zone: values are converted to UTC and read "
                                         "back as timestamps without zone")
    return NativeType({
        "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT", "float32": "FLOAT", "float64": "DOUBLE",
        "boolean": "TINYINT(1)", "text": "LONGTEXT", "date": "DATE", "time": "TIME(6)", "timestamp": "DATETIME(6)",
        "json": "JSON", "binary": "LONGBLOB",
    }[k])


# --- SQLite ----------------------------------------------------------------------------------------------------------

def sqlite_to_canonical(native: str) -> CanonicalType:
    """Declared SQLite types are free text: recognise the usual names, else fall back to SQLite's affinity rules."""
    base, first, second, bare = _split(native)
    if base in ("decimal_text", "numeric_text"):
        return decimal(first, second or 0) if first is not None else decimal()
    if base in ("decimal", "numeric", "money", "number"):
        return decimal(first, second or 0) if first is not None else decimal()
    if base in ("boolean", "bool", "bit"):
        return BOOLEAN
    if base in ("smallint", "tinyint", "int2"):
        return INT16
    if base in ("int", "int4", "mediumint"):
        return INT32
    if base == "float4":
        return FLOAT32
    if base in ("char", "varchar", "nchar", "nvarchar", "character", "varying", "native", "string") and first:
        return string(first)
    if bare in ("timestamptz", "timestamp with time zone", "datetimeoffset", "datetimetz"):
        return TIMESTAMPTZ
    if base in ("datetime", "timestamp", "datetime2", "smalldatetime"):
        return TIMESTAMP
    if base == "date":
        return DATE
    if base == "time":
        return TIME
    if base in ("uuid", "guid", "uniqueidentifier"):
        return UUID
    if base in ("json", "jsonb"):
        return JSON
    upper = bare.upper()
    if "INT" in upper:
        return INT64
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")) or not upper:
        return TEXT
    if "BLOB" in upper or base in ("binary", "varbinary", "bytea", "image"):
        return BINARY
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return FLOAT64
    return decimal()


def sqlite_from_canonical(t: CanonicalType) -> NativeType:
    k = t.kind
    if k == "decimal":
        # NUMERIC affinity would turn '12345678901234.5678' into a REAL; the TEXT affinity of this name keeps every digit.
        return NativeType(f"DECIMAL_TEXT({t.precision},{t.scale or 0})" if t.precision is not None else "DECIMAL_TEXT")
    if k == "string":
        return NativeType(f"VARCHAR({t.length})" if t.length else "TEXT")
    if k == "timestamptz":
        return NativeType("TIMESTAMPTZ", "SQLite has no time-zone type: values are stored as ISO-8601 text in UTC, "
                                         "the original offset is not kept")
    return NativeType({
        "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT", "float32": "FLOAT4", "float64": "DOUBLE",
        "boolean": "BOOLEAN", "text": "TEXT", "date": "DATE", "time": "TIME", "timestamp": "TIMESTAMP",
        "uuid": "UUID", "json": "JSON", "binary": "BLOB",
    }[k])


# --- DuckDB ----------------------------------------------------------------------------------------------------------

_DUCK_SIMPLE = {
    "boolean": BOOLEAN, "bool": BOOLEAN, "tinyint": INT16, "int1": INT16, "utinyint": INT16, "smallint": INT16,
    "int2": INT16, "usmallint": INT32, "integer": INT32, "int4": INT32, "int": INT32, "uinteger": INT64,
    "bigint": INT64, "int8": INT64, "long": INT64, "ubigint": decimal(20, 0), "hugeint": decimal(38, 0),
    "uhugeint": decimal(38, 0), "real": FLOAT32, "float4": FLOAT32, "float": FLOAT32, "double": FLOAT64,
    "float8": FLOAT64, "date": DATE, "time": TIME, "timestamp": TIMESTAMP, "datetime": TIMESTAMP,
    "timestamp_s": TIMESTAMP, "timestamp_ms": TIMESTAMP, "timestamp_ns": TIMESTAMP,
    "timestamp with time zone": TIMESTAMPTZ, "timestamptz": TIMESTAMPTZ, "uuid": UUID, "json": JSON,
    "blob": BINARY, "bytea": BINARY, "varbinary": BINARY, "binary": BINARY,
}


def duckdb_to_canonical(native: str) -> CanonicalType:
    text = native.strip()
    if text.endswith("]") or text.upper().startswith(("STRUCT", "MAP", "UNION")):
        return JSON  # nested values travel as JSON text
    base, first, second, bare = _split(text)
    if bare in _DUCK_SIMPLE:
        return _DUCK_SIMPLE[bare]
    if base in ("decimal", "numeric"):
        return decimal(first or 18, second if second is not None else 3)
    if base in ("varchar", "char", "bpchar", "text", "string"):
        return string(first) if first else TEXT
    return TEXT


DUCKDB_MAX_PRECISION = 38


def duckdb_from_canonical(t: CanonicalType) -> NativeType:
    k = t.kind
    if k == "decimal":
        if t.precision is None:
            return NativeType("DECIMAL(38,10)", "unconstrained decimal stored as DECIMAL(38,10): digits beyond "
                                                "10 decimal places are rounded")
        if t.precision > DUCKDB_MAX_PRECISION:
            return NativeType("VARCHAR", f"precision {t.precision} is above DuckDB's 38 digits: stored as exact "
                                         "decimal text and read back as a string")
        return NativeType(f"DECIMAL({t.precision},{t.scale or 0})")
    return NativeType({
        "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT", "float32": "REAL", "float64": "DOUBLE",
        "boolean": "BOOLEAN", "string": "VARCHAR", "text": "VARCHAR", "date": "DATE", "time": "TIME",
        "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ", "uuid": "UUID", "json": "JSON", "binary": "BLOB",
    }[k])


# --- CSV -------------------------------------------------------------------------------------------------------------

CSV_TABLE_WARNING = ("CSV keeps no column types: they are detected again from the values on read, and an empty "
                     "field reads back as NULL (an empty string is not kept)")


def csv_from_canonical(t: CanonicalType) -> NativeType:
    return NativeType(str(t))


# --- OData (source only) ---------------------------------------------------------------------------------------------

def edm_to_canonical(edm: str, *, max_length: int | None = None, precision: int | None = None,
                     scale: int | None = None) -> CanonicalType:
    name = edm.removeprefix("Edm.")
    if edm.startswith("Collection(") or not edm.startswith("Edm."):
        return JSON  # complex types and collections travel as JSON text (enum types are mapped by the caller)
    if name == "String":
        return string(max_length)
    if name == "Decimal":
        return decimal(precision, scale or 0) if precision is not None else decimal()
    return {
        "Int16": INT16, "Byte": INT16, "SByte": INT16, "Int32": INT32, "Int64": INT64, "Single": FLOAT32,
        "Double": FLOAT64, "Boolean": BOOLEAN, "Date": DATE, "TimeOfDay": TIME, "DateTimeOffset": TIMESTAMPTZ,
        "Guid": UUID, "Binary": BINARY, "Stream": BINARY, "Duration": TEXT,
    }.get(name, TEXT)


# --- one entry point per direction -----------------------------------------------------------------------------------

_TO_CANONICAL = {"PostgreSQL": pg_to_canonical, "MySQL": mysql_to_canonical, "SQLite": sqlite_to_canonical,
                 "DuckDB": duckdb_to_canonical}
_FROM_CANONICAL = {"PostgreSQL": pg_from_canonical, "MySQL": mysql_from_canonical, "SQLite": sqlite_from_canonical,
                   "DuckDB": duckdb_from_canonical, "CSV": csv_from_canonical}


def to_canonical(provider: str, native: str) -> CanonicalType:
    """The canonical type of a provider's native type text (unknown types fall back to text)."""
    if provider == "OData":
        return edm_to_canonical(native)
    if provider == "CSV":
        return parse_canonical(native)
    return _TO_CANONICAL[provider](native)


def to_native(provider: str, t: CanonicalType, *, key: bool = False) -> NativeType:
    """The DDL type text for ``t`` on ``provider``, with ``lossy`` set when the provider cannot keep it exactly."""
    if provider == "MySQL":
        return mysql_from_canonical(t, key=key)
    if provider not in _FROM_CANONICAL:
        raise ValueError(f"{provider} is not a destination")
    return _FROM_CANONICAL[provider](t)


def parse_canonical(text: str) -> CanonicalType:
    """Parse ``str(CanonicalType)`` back (``decimal(18,4)``, ``string(20)``, ``timestamptz``...)."""
    base, first, second, _ = _split(text)
    if base == "decimal":
        return decimal(first, second or 0) if first is not None else decimal()
    if base == "string":
        return string(first)
    return CanonicalType(base if base in KINDS else "text")


def map_columns(provider: str, columns: Iterable[tuple[str, CanonicalType]],
                key: Sequence[str] = ()) -> tuple[list[str], list[TypeWarning]]:
    """DDL types for a table's columns, with a TypeWarning for each lossy one (the caller reports them)."""
    ddl: list[str] = []
    warnings: list[TypeWarning] = []
    for name, ctype in columns:
        native = to_native(provider, ctype, key=name in key)
        ddl.append(native.ddl)
        if native.lossy:
            warnings.append(TypeWarning(provider, name, str(ctype), native.ddl, native.lossy))
    return ddl, warnings
