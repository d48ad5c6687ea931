"""SQLAlchemy Core tables derived from the EDM, plus the few private columns the service needs.

Each entity set becomes one table whose columns are the entity type's properties (same names), so adding a
property is one edit in ``schema/CData.xml`` plus a migration.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from odata_sync.edm.model import EntitySet, Model, Property
from odata_sync.store.types import UTCDateTime

# Private columns: never part of the EDM, never serialised.
PRIVATE_COLUMNS: dict[str, list[sa.Column]] = {
    "Users": [
        sa.Column("_TokenHash", sa.String(64), index=True, unique=True),
        sa.Column("_TokenExpires", UTCDateTime()),
    ],
    # the run queue is the History set itself: QUEUED rows are claimed by a worker, which holds a lease
    "History": [
        sa.Column("_Options", sa.JSON()),  # what was asked: ForceFullSync, the tasks of ExecuteQuery, ...
        sa.Column("_Owner", sa.String(64)),  # the worker (node) running it
        sa.Column("_Lease", UTCDateTime()),  # renewed while running; an expired lease means the node died
        sa.Column("_NotBefore", UTCDateTime()),  # a retry waits for its backoff before a worker may claim it
    ],
}


def table_name(entity_set: str) -> str:
    """``TaskHistory`` -> ``task_history``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", entity_set).lower()


def column_type(prop: Property, is_key: bool) -> sa.types.TypeEngine:
    if prop.collection:
        return sa.JSON()
    match prop.type:
        case "Edm.String":
            return sa.String(prop.max_length) if prop.max_length else sa.Text()
        case "Edm.Int32":
            return sa.Integer()
        case "Edm.Int64":
            # SQLite only auto-increments an INTEGER PRIMARY KEY
            return sa.BigInteger().with_variant(sa.Integer(), "sqlite") if is_key else sa.BigInteger()
        case "Edm.Boolean":
            return sa.Boolean()
        case "Edm.DateTimeOffset":
            return UTCDateTime()
        case "Edm.Guid":
            return sa.String(36)
        case "Edm.Double":
            return sa.Float()
        case "Edm.Decimal":
            return sa.Numeric()
    raise ValueError(f"no column type for {prop.type_name}")


def _table(metadata: sa.MetaData, es: EntitySet) -> sa.Table:
    et = es.entity_type
    columns = []
    for prop in et.properties.values():
        is_key = prop.name == et.key
        autoincrement = is_key and prop.type == "Edm.Int64" and prop.computed
        columns.append(sa.Column(prop.name, column_type(prop, is_key), primary_key=is_key,
                                 autoincrement=autoincrement if is_key else "auto",
                                 nullable=not is_key and prop.nullable,
                                 index=prop.indexed and not prop.index_with))
    columns += [c._copy() for c in PRIVATE_COLUMNS.get(es.name, [])]
    name = table_name(es.name)
    indexes = [sa.Index(f"ix_{name}_{prop.name}_{'_'.join(prop.index_with)}", prop.name, *prop.index_with)
               for prop in et.properties.values() if prop.index_with]
    return sa.Table(name, metadata, *columns, *indexes)


def build_metadata(model: Model) -> sa.MetaData:
    metadata = sa.MetaData()
    for es in model.entity_sets.values():
        _table(metadata, es)
    sa.Table("run_log", metadata,  # GetJobLog: one line per event of a run, at the job's Verbosity
             sa.Column("Id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                       autoincrement=True),
             sa.Column("HistoryId", sa.BigInteger(), nullable=False, index=True),
             sa.Column("Timestamp", UTCDateTime(), nullable=False),
             sa.Column("Level", sa.Integer(), nullable=False),
             sa.Column("Message", sa.Text(), nullable=False))
    sa.Table("settings", metadata,
             sa.Column("name", sa.String(128), primary_key=True),
             sa.Column("value", sa.Text(), nullable=False))
    return metadata
