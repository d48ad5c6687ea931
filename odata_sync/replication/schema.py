"""The destination table's shape: created from the source's (or the statement's) columns, evolved when the source
grows (AlterSchema: new columns added, types widened where no value can be lost), and the ``Layout`` that says how a
source row lands in it."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from odata_sync.connectors import ColumnInfo, Connector, TypeWarning
from odata_sync.connectors import types as ctypes
from odata_sync.errors import BadRequest, ODataSyncError

from . import dialect
from .statement import ColumnDefinition

_INT_RANK = {"int16": 1, "int32": 2, "int64": 3}
_SQL_TYPE_PARSERS = ("PostgreSQL", "MySQL", "SQLite", "DuckDB")


def declared_type(provider: str, text: str) -> ctypes.CanonicalType:
    """A column type written in the statement, read in the destination's dialect (PostgreSQL's for other ones)."""
    return ctypes.to_canonical(provider if provider in _SQL_TYPE_PARSERS else "PostgreSQL", text)


def widened(current: ctypes.CanonicalType, incoming: ctypes.CanonicalType) -> ctypes.CanonicalType | None:
    """The type ``current`` must become to hold every ``incoming`` value without loss, when that is a safe
    widening (int16→int32→int64, float32→float64, longer or unbounded strings, more decimal digits); else None."""
    k, n = current.kind, incoming.kind
    if k in _INT_RANK and n in _INT_RANK:
        return incoming if _INT_RANK[n] > _INT_RANK[k] else None
    if k == "float32" and n == "float64":
        return incoming
    if k == "string" and current.length:
        if n == "string" and incoming.length and incoming.length > current.length:
            return incoming
        if n == "text" or (n == "string" and not incoming.length):
            return ctypes.TEXT
        return None
    if k == "decimal" and current.precision is not None and n == "decimal":
        if incoming.precision is None:
            return ctypes.decimal()
        cs, ns = current.scale or 0, incoming.scale or 0
        scale = max(cs, ns)
        precision = max(current.precision - cs, incoming.precision - ns) + scale
        if (precision, scale) != (current.precision, cs):
            return ctypes.decimal(precision, scale)
    return None


@dataclass
class Layout:
    """How rows read from the source are written: the destination names of the written values, and the functions
    that turn a source batch into them (None when rows go through untouched, the common case)."""

    names: list[str]
    key: list[str]  # destination names of the key columns
    key_positions: list[int]  # their positions in a written row
    columns: list[ColumnInfo]  # the destination's description of each written column
    source_names: list[str]  # the source column each written value comes from
    project: Callable[[tuple], tuple] | None = None
    truncations: list[tuple[int, int]] = field(default_factory=list)  # (written position, max length)
    truncated: dict[str, int] = field(default_factory=dict)  # values cut by AutoTruncateStrings, per column
    #: the source's type of each written value: rows read are canonical values of these (``write_batch``'s hint)
    incoming: list[ctypes.CanonicalType] = field(default_factory=list)

    def shape(self, batch: list[tuple]) -> list[tuple]:
        if self.project is not None:
            batch = [self.project(row) for row in batch]
        if self.truncations:
            batch = [self._truncate(row) for row in batch]
        return batch

    def _truncate(self, row: tuple) -> tuple:
        out = None
        for position, limit in self.truncations:
            value = row[position]
            if isinstance(value, str) and len(value) > limit:
                if out is None:
                    out = list(row)
                out[position] = value[:limit]
                name = self.names[position]
                self.truncated[name] = self.truncated.get(name, 0) + 1
        return row if out is None else tuple(out)

    def keys(self, rows: list[tuple]) -> list[tuple]:
        get = operator.itemgetter(*self.key_positions)
        if len(self.key_positions) == 1:
            return [(get(row),) for row in rows]
        return [get(row) for row in rows]


def desired_columns(source: Sequence[ColumnInfo], declared: Sequence[ColumnDefinition], key: Sequence[str],
                    provider: str) -> tuple[list[ColumnInfo], list[int]]:
    """The destination's columns and, for each, the position of its value in a source row.

    Declared columns are matched to the source's result by name (any case) when every one is there, else by
    position when the counts agree."""
    keys = {k.lower() for k in key}
    if not declared:
        columns = [ColumnInfo.of(c.name, c.canonical, nullable=c.nullable, primary_key=c.name.lower() in keys)
                   for c in source]
        return columns, list(range(len(source)))
    by_lower = {c.name.lower(): i for i, c in enumerate(source)}
    if all(d.name.lower() in by_lower for d in declared):
        positions = [by_lower[d.name.lower()] for d in declared]
    elif len(declared) == len(source):
        positions = list(range(len(source)))
    else:
        missing = next(d.name for d in declared if d.name.lower() not in by_lower)
        raise BadRequest(f"declared column '{missing}' is not in the source's result, and the source returns "
                         f"{len(source)} columns for {len(declared)} declared", target="Query")
    columns = [ColumnInfo.of(d.name, declared_type(provider, d.type), nullable=d.nullable,
                             primary_key=d.name.lower() in keys) for d in declared]
    return columns, positions


async def create(destination: Connector, table: str, schema: str | None, columns: list[ColumnInfo],
                 key: Sequence[str]) -> list[TypeWarning]:
    names = {c.name.lower(): c.name for c in columns}
    missing = [k for k in key if k.lower() not in names]
    if missing:
        raise BadRequest(f"key column '{missing[0]}' is not among the replicated columns", target="Query")
    return await destination.create_table(table, columns, [names[k.lower()] for k in key], schema)


async def evolve(destination: Connector, table: str, schema: str | None, wanted: list[ColumnInfo],
                 alter_schema: bool, warn: Callable[[str], None]) -> tuple[list[ColumnInfo | None], list[str]]:
    """Bring an existing table up to ``wanted``: with AlterSchema add the missing columns and widen narrower types.
    Returns, per wanted column, the destination's column (None: not in the table, so not written), and the names
    of the columns added."""
    existing = {c.name.lower(): c for c in await destination.list_columns(table, schema)}
    result: list[ColumnInfo | None] = []
    added_names: list[str] = []
    changed = False
    for column in wanted:
        current = existing.get(column.name.lower())
        if current is None:
            if not alter_schema:
                warn(f"column '{column.name}' is not in the destination table and AlterSchema is off: "
                     "it is not replicated")
                result.append(None)
                continue
            added = ColumnInfo.of(column.name, column.canonical)  # nullable: the rows already there have no value
            for warning in await destination.add_column(table, added, schema):
                warn(str(warning))
            warn(f"column '{column.name}' ({column.canonical}) added to the destination table")
            changed = True
            added_names.append(column.name)
            result.append(added)
            continue
        wider = widened(current.canonical, column.canonical) if alter_schema else None
        if wider is not None:
            native = ctypes.to_native(destination.provider, wider)
            sql = dialect.widen_column(destination.provider, table, schema, current.name, native.ddl,
                                       current.nullable)
            if sql is not None:
                try:
                    await destination.execute(sql)
                except ODataSyncError as exc:
                    warn(f"column '{current.name}' could not be widened from {current.canonical} to {wider}: "
                         f"{exc.message}")
                else:
                    warn(f"column '{current.name}' widened from {current.canonical} to {wider}")
                    changed = True
        result.append(current)
    if changed:
        existing = {c.name.lower(): c for c in await destination.list_columns(table, schema)}
        result = [None if c is None else existing.get(c.name.lower(), c) for c in result]
    return result, added_names


def layout(wanted: list[ColumnInfo], positions: list[int], present: list[ColumnInfo | None], key: Sequence[str],
           auto_truncate: bool, source: Sequence[ColumnInfo]) -> Layout:
    """The Layout for writing ``wanted`` (values at ``positions`` of a source row) into columns ``present``."""
    chosen = [(w, p, c) for w, p, c in zip(wanted, positions, present, strict=True) if c is not None]
    names = [c.name for _w, _p, c in chosen]
    lower = [n.lower() for n in names]
    missing = [k for k in key if k.lower() not in lower]
    if missing:
        raise BadRequest(f"key column '{missing[0]}' is not written to the destination table", target="Query")
    picked = [p for _w, p, _c in chosen]
    project = None if picked == list(range(len(source))) else _projector(picked)
    truncations = []
    if auto_truncate:
        for i, (_w, p, column) in enumerate(chosen):
            limit = column.canonical.length if column.canonical.kind == "string" else None
            incoming = source[p].canonical
            if limit and not (incoming.kind == "string" and incoming.length and incoming.length <= limit):
                truncations.append((i, limit))
    return Layout(names=names, key=[names[lower.index(k.lower())] for k in key],
                  key_positions=[lower.index(k.lower()) for k in key], columns=[c for _w, _p, c in chosen],
                  source_names=[source[p].name for p in picked], project=project, truncations=truncations,
                  incoming=[source[p].canonical for p in picked])


def _projector(positions: list[int]) -> Callable[[tuple], tuple]:
    if len(positions) == 1:
        index = positions[0]
        return lambda row: (row[index],)
    return operator.itemgetter(*positions)
