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


def select_part(es: EntitySet, options: QueryOptions | None) -> str:
    if options is None or options.select is None:
        return ""
    items = list(options.select)
    for nav, nested in options.expand.items():
        if nav in items:
            items.remove(nav)
        inner = select_part(nested.entity_set, nested)
        items.append(f"{nav}{inner}")
    return "(" + ",".join(items) + ")"


def context_url(ctx: RequestContext, fragment: str) -> str:
    return f"{ctx.root}$metadata#{fragment}"


class Serializer:
    """Turns reader rows into payloads. In the default case (minimal metadata, no IEEE754 strings) the rows already
    are the payload and are only trimmed in place; the other formats build new objects."""

    def __init__(self, model: Model, ctx: RequestContext) -> None:
        self.model = model
        self.ctx = ctx
        self.final = ctx.metadata == "minimal" and not ctx.ieee754

    # ---- the default format: trim in place ----------------------------------------------------------------
    def _trim(self, es: EntitySet, rows: list[dict], options: QueryOptions) -> None:
        if not rows:
            return
        visible = visible_properties(es, options)
        navs = options.expand
        allowed = {"@odata.etag", *visible, *navs, *(f"{n}@odata.count" for n in navs)}
        first = rows[0]
        extras = [k for k in first if k not in allowed]
        missing = [v for v in visible if v not in first]
        if extras or missing:
            for row in rows:
                for name in extras:
                    del row[name]
                for name in missing:
                    row[name] = None
        for nav_name, nested in navs.items():
            target = self.model.target_set(es, es.entity_type.navigations[nav_name])
            children = []
            for row in rows:
                value = row.get(nav_name)
                if isinstance(value, list):
                    children.extend(value)
                elif value is not None:
                    children.append(value)
            if nav_name in options.expand_refs:
                for row in rows:
                    value = row.get(nav_name)
                    row[nav_name] = [self._ref(target, c) for c in value] if isinstance(value, list) else (
                        None if value is None else self._ref(target, value))
            else:
                self._trim(target, children, nested)

    # ---- other formats -------------------------------------------------------------------------------------
    def entity(self, es: EntitySet, row: dict, options: QueryOptions, visible: list[str]) -> dict:
        ctx = self.ctx
        et = es.entity_type
        out: dict = {}
        if ctx.metadata == "full":
            url = entity_url(ctx, es, row[et.key])
            out["@odata.type"] = f"#{self.model.namespace}.{et.name}"
            out["@odata.id"] = url
            out["@odata.etag"] = row["@odata.etag"]
            out["@odata.editLink"] = url
        elif ctx.metadata == "minimal":
            out["@odata.etag"] = row["@odata.etag"]
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
                if f"{nav_name}@odata.count" in row:
                    out[f"{nav_name}@odata.count"] = self._count(row[f"{nav_name}@odata.count"])
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

    def _values(self, es: EntitySet, rows: list[dict], options: QueryOptions) -> list[dict]:
        if self.final:
            self._trim(es, rows, options)
            return rows
        visible = visible_properties(es, options)
        return [self.entity(es, row, options, visible) for row in rows]

    def collection(self, es: EntitySet, rows: list[dict], options: QueryOptions, *, count: int | None,
                   next_link: str | None, context_fragment: str | None = None) -> dict:
        out: dict = {}
        if self.ctx.metadata != "none":
            out["@odata.context"] = context_url(self.ctx, context_fragment or es.name + select_part(es, options))
        if count is not None:
            out["@odata.count"] = self._count(count)
        out["value"] = self._values(es, rows, options)
        if next_link:
            out["@odata.nextLink"] = next_link
        return out

    def single(self, es: EntitySet, row: dict, options: QueryOptions) -> dict:
        out: dict = {}
        if self.ctx.metadata != "none":
            out["@odata.context"] = context_url(self.ctx, f"{es.name}{select_part(es, options)}/$entity")
        out.update(self._values(es, [row], options)[0])
        return out
