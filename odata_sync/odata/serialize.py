"""OData JSON: context URLs, metadata levels (minimal / full / none), IEEE754Compatible, and the bytes on the wire."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

import orjson

from odata_sync.edm.model import EntitySet, Model
from odata_sync.odata.hooks import RequestContext
from odata_sync.odata.options import QueryOptions, visible_properties

_DUMP_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_TYPE_ANNOTATED = {"Edm.Int64": "#Int64", "Edm.DateTimeOffset": "#DateTimeOffset", "Edm.Guid": "#Guid",
                   "Edm.Decimal": "#Decimal"}


def _default(value):
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(payload) -> bytes:
    return orjson.dumps(payload, default=_default, option=_DUMP_OPTIONS)


def key_literal(es: EntitySet, value) -> str:
    """The canonical key predicate, percent-encoded for use in a URL: ``('a%2Fb')`` or ``(42)``."""
    if es.entity_type.key_property.type in ("Edm.Int32", "Edm.Int64"):
        return f"({value})"
    return "('" + quote(str(value).replace("'", "''"), safe="!$&*+,;=:@~-._") + "')"


def entity_url(ctx: RequestContext, es: EntitySet, key) -> str:
    return f"{ctx.root}{es.name}{key_literal(es, key)}"


def _select_part(es: EntitySet, options: QueryOptions | None) -> str:
    if options is None or options.select is None:
        return ""
    items = list(options.select)
    for nav, nested in options.expand.items():
        if nav in items:
            items.remove(nav)
        inner = _select_part(nested.entity_set, nested)
        items.append(f"{nav}{inner}")
    return "(" + ",".join(items) + ")"


def context_url(ctx: RequestContext, fragment: str) -> str:
    return f"{ctx.root}$metadata#{fragment}"


class Serializer:
    def __init__(self, model: Model, ctx: RequestContext) -> None:
        self.model = model
        self.ctx = ctx

    def entity(self, es: EntitySet, row: dict, options: QueryOptions, visible: list[str]) -> dict:
        ctx = self.ctx
        et = es.entity_type
        out: dict = {}
        if ctx.metadata == "full":
            url = entity_url(ctx, es, row[et.key])
            out["@odata.type"] = f"#{self.model.namespace}.{et.name}"
            out["@odata.id"] = url
            out["@odata.etag"] = row["@etag"]
            out["@odata.editLink"] = url
        elif ctx.metadata == "minimal":
            out["@odata.etag"] = row["@etag"]
        props = et.properties
        for name in visible:
            value = row.get(name)
            prop = props[name]
            if ctx.ieee754 and value is not None and prop.type in ("Edm.Int64", "Edm.Decimal"):
                value = str(value)
            if ctx.metadata == "full" and prop.type in _TYPE_ANNOTATED and not prop.collection:
                out[f"{name}@odata.type"] = _TYPE_ANNOTATED[prop.type]
            out[name] = value
        for nav_name, nested in options.expand.items():
            nav = et.navigations[nav_name]
            target = self.model.target_set(es, nav)
            if ctx.metadata == "full":
                out[f"{nav_name}@odata.navigationLink"] = f"{entity_url(ctx, es, row[et.key])}/{nav_name}"
            value = row.get(nav_name)
            is_ref = nav_name in options.expand_refs
            nested_visible = visible_properties(target, nested)
            if nav.collection:
                if f"{nav_name}@count" in row:
                    out[f"{nav_name}@odata.count"] = self._count(row[f"{nav_name}@count"])
                out[nav_name] = [self._ref(target, c) if is_ref else self.entity(target, c, nested, nested_visible)
                                 for c in value or []]
            else:
                out[nav_name] = None if value is None else (
                    self._ref(target, value) if is_ref else self.entity(target, value, nested, nested_visible))
        return out

    def _ref(self, es: EntitySet, row: dict) -> dict:
        return {"@odata.id": entity_url(self.ctx, es, row[es.entity_type.key])}

    def _count(self, count: int):
        return str(count) if self.ctx.ieee754 else count

    def collection(self, es: EntitySet, rows: list[dict], options: QueryOptions, *, count: int | None,
                   next_link: str | None, context_fragment: str | None = None) -> dict:
        out: dict = {}
        if self.ctx.metadata != "none":
            out["@odata.context"] = context_url(self.ctx, context_fragment or es.name + _select_part(es, options))
        if count is not None:
            out["@odata.count"] = self._count(count)
        visible = visible_properties(es, options)
        out["value"] = [self.entity(es, row, options, visible) for row in rows]
        if next_link:
            out["@odata.nextLink"] = next_link
        return out

    def single(self, es: EntitySet, row: dict, options: QueryOptions) -> dict:
        out: dict = {}
        if self.ctx.metadata != "none":
            out["@odata.context"] = context_url(self.ctx, f"{es.name}{_select_part(es, options)}/$entity")
        out.update(self.entity(es, row, options, visible_properties(es, options)))
        return out

