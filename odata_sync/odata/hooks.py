"""The seam between the generic OData layer and the service: per-set hooks and the request context they receive."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from odata_sync.edm.model import EntitySet, Model


@dataclass
class Principal:
    """The authenticated caller."""

    name: str
    roles: frozenset[str]
    user_id: str | None = None

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass
class RequestContext:
    """Everything a request's processing needs to know about how to answer."""

    root: str  # absolute service root URL, ending in '/'
    principal: Principal
    metadata: str = "minimal"  # minimal | full | none
    ieee754: bool = False
    max_page_size: int = 1000
    prefer: dict[str, str] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)  # Preference-Applied entries


@dataclass
class WriteContext:
    """Handed to write hooks: the open transaction and who is writing."""

    conn: AsyncConnection
    model: Model
    tables: Any  # callable: entity-set name -> sa.Table
    principal: Principal
    now: dt.datetime
    extras: dict[str, Any] = field(default_factory=dict)  # body members outside the EDM, e.g. Query#1
    response: dict[str, Any] = field(default_factory=dict)  # transient values to show once (AuthToken)


class EntityHooks:
    """Default behaviour: plain CRUD. The service subclasses this per entity set."""

    #: CData's ``Tasks('JobName')``: a non-numeric string where a numeric key goes addresses a collection by this property
    alternate_collection_key: str | None = None
    #: body members matching ``Name#N`` that this set accepts (collected into ``WriteContext.extras[Name]``)
    array_members: frozenset[str] = frozenset()
    #: whether shaped rows (after ``present``) may be cached and reused for any caller; a set whose ``present``
    #: depends on the caller must say False. Rows are revalidated by the Modified timestamp, so every writer of
    #: such a set must move Modified on every change (the handler and the service's hooks do).
    cacheable: bool = True
    #: string properties that also accept a JSON number (CData's ``"Type": 1``)
    lenient_strings: frozenset[str] = frozenset()
    #: whether DELETE on the whole collection (with an optional $filter) prunes it
    collection_delete: bool = False

    def hidden(self, principal: Principal) -> frozenset[str]:
        """Properties this caller may neither read nor filter on."""
        return frozenset()

    def authorize_key(self, principal: Principal, key: Any) -> None:
        """Refuse (Forbidden) addressing this entity by key."""

    def row_filter(self, principal: Principal, table: sa.Table) -> sa.ColumnElement | None:
        """Row-level restriction for this caller (None: every row)."""
        return None

    def present(self, principal: Principal, row: dict) -> None:
        """Adjust a row before it is serialised (masking)."""

    async def before_create(self, tx: WriteContext, values: dict) -> None:
        """Validate and complete ``values`` (computed properties, defaults the EDM cannot express)."""

    async def after_create(self, tx: WriteContext, values: dict) -> None:
        """Side effects in the same transaction (child rows)."""

    async def before_update(self, tx: WriteContext, old: dict, changes: dict) -> None:
        """Validate ``changes`` against the stored row ``old``; may add to ``changes``."""

    async def before_delete(self, tx: WriteContext, old: dict) -> None:
        """Refuse (raise) or cascade."""

    async def after_commit(self) -> None:
        """Invalidate caches once the write is durable."""


@dataclass
class ActionCall:
    """An action invocation: its declared parameters (coerced), the raw extras, and the caller."""

    name: str
    params: dict[str, Any]
    context: RequestContext
    entity_set: EntitySet | None = None
