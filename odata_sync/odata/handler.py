"""The generic OData request processor: resolves the resource path, applies the method, answers in OData JSON.

The service supplies per-set hooks, authorisation and action handlers through the ``Service`` protocol below.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError

from odata_sync.edm.model import Action, EntitySet, Model
from odata_sync.errors import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    NotImplementedYet,
    PreconditionFailed,
)
from odata_sync.odata import body as bodies
from odata_sync.odata.hooks import ActionCall, EntityHooks, Principal, RequestContext, WriteContext
from odata_sync.odata.literals import coerce, coerce_collection
from odata_sync.odata.negotiate import Format, negotiate
from odata_sync.odata.options import QueryOptions, parse_options
from odata_sync.odata.paging import TokenSigner
from odata_sync.odata.query import Reader, etag
from odata_sync.odata.serialize import Serializer, context_url, dumps, entity_url
from odata_sync.odata.urls import ParsedUrl, Segment, parse_key, parse_url
from odata_sync.store.engine import ReadSession, Store
from odata_sync.store.types import utcnow

ODATA_VERSION = "4.0"


class Service(Protocol):
    def hooks(self, entity_set: str) -> EntityHooks: ...

    def authorize(self, principal: Principal, method: str, target: EntitySet | Action | None) -> None: ...

    def action_handler(self, action: Action): ...

    def action_alias(self, name: str) -> str | None: ...


@dataclass
class Resource:
    """What a path addresses."""

    kind: str  # collection | entity | property | value | count
    entity_set: EntitySet
    where: list
    parents: list[tuple[EntitySet, list]]
    key: Any = None
    prop: str | None = None
    values: dict | None = None  # what a POST to this collection must carry (CData's Tasks('JobName'))
    join: list[tuple[str, str]] | None = None  # (parent, child) properties a POST through a navigation copies
    nav_single: bool = False


class ODataHandler:
    def __init__(self, model: Model, store: Store, service: Service, signer: TokenSigner, metadata: bytes, *,
                 root_path: str = "/api.rsc", max_page_size: int = 1000) -> None:
        self.model = model
        self.store = store
        self.service = service
        self.signer = signer
        self.metadata = metadata
        self.root_path = root_path
        self.max_page_size = max_page_size

    # ---- entry ---------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        url = parse_url(request.raw_path, self.root_path)
        first = url.segments[0] if url.segments else None
        if first is not None and first.name == "$metadata" and first.key is None:
            return self._metadata(request, url)
        max_version = request.headers.get("OData-MaxVersion")
        if max_version and max_version.strip() < "4.0":
            raise BadRequest(f"OData-MaxVersion {max_version} is lower than this service's 4.0")
        aliases = [name for name in url.params if name.startswith("@") and name != "@authtoken"]
        if aliases:
            raise NotImplementedYet(f"Parameter aliases ({aliases[0]}) are not supported")
        workspace = url.params.get("workspaceid")
        if workspace is not None and workspace.lower() != "default":
            raise NotFound(f"Workspace '{workspace}' does not exist")
        ctx = RequestContext(root=self._root_url(request), principal=principal, max_page_size=self.max_page_size,
                             prefer=_prefer(request.headers.getall("Prefer", [])))
        if first is None:
            return self._service_document(request, url, ctx)
        if first.name == "$batch":
            raise NotImplementedYet("$batch is not supported yet")
        if first.name.startswith("$"):
            raise NotFound(f"Resource not found for the segment '{first.name}'")
        action_name = self.service.action_alias(first.name)
        action = self.model.action(action_name or first.name)
        if action is not None and first.key is None:
            if len(url.segments) > 1:
                raise NotFound(f"Resource not found for the segment '{url.segments[1].name}'")
            return await self._action(request, url, ctx, action)
        es = self.model.entity_set(first.name)
        if es is None:
            raise NotFound(f"Resource not found for the segment '{first.name}'")
        resource = self._resolve(es, url.segments)
        return await self._dispatch(request, url, ctx, resource)

    def _root_url(self, request: web.Request) -> str:
        host = request.headers.get("X-Forwarded-Host") or request.host
        scheme = request.headers.get("X-Forwarded-Proto") or request.scheme
        return f"{scheme}://{host}{self.root_path}/"

    # ---- service document and metadata ---------------------------------------------------------------------
    def _service_document(self, request, url: ParsedUrl, ctx: RequestContext):
        self._only(request, "GET", "HEAD")
        fmt = negotiate(url.options.get("$format"), request.headers.get("Accept"))
        payload = {"@odata.context": f"{ctx.root}$metadata",
                   "value": [{"name": name, "kind": "EntitySet", "url": name} for name in self.model.entity_sets]}
        return self._json(payload, fmt)

    def _metadata(self, request, url: ParsedUrl):
        self._only(request, "GET", "HEAD")
        if len(url.segments) > 1:
            raise NotFound(f"Resource not found for the segment '{url.segments[1].name}'")
        negotiate(url.options.get("$format"), request.headers.get("Accept"), alternatives=("application/xml",))
        return web.Response(body=self.metadata, content_type="application/xml", charset="utf-8")

    # ---- path resolution -----------------------------------------------------------------------------------
    def _key_condition(self, es: EntitySet, raw: str) -> tuple[str, Any, list]:
        """Return (kind, key value, where) for a key predicate; CData's ``Tasks('JobName')`` yields a collection."""
        et = es.entity_type
        table = self.store.table(es.name)
        key = parse_key(raw)
        if key.name is not None and key.name.lower() != et.key.lower():
            raise BadRequest(f"'{key.name}' is not the key of '{self.model.namespace}.{et.name}' (the key is {et.key})")
        key_type = et.key_property.type
        alternate = self.service.hooks(es.name).alternate_collection_key
        numeric = key_type in ("Edm.Int32", "Edm.Int64")
        if numeric and key.name is None and alternate and (key.quoted or not key.text.lstrip("-").isdigit()):
            return "alternate", key.text, [table.c[alternate] == key.text]
        if numeric and key.quoted and key.name is None:
            raise BadRequest(f"The key of {es.name} is a number, not a string")
        value = coerce(key_type, key.text, et.key)
        return "entity", value, [table.c[et.key] == value]

    def _resolve(self, es: EntitySet, segments: list[Segment]) -> Resource:
        first = segments[0]
        resource = Resource("collection", es, [], [])
        if first.key is not None:
            kind, value, where = self._key_condition(es, first.key)
            resource = Resource(kind, es, where, [], key=value)
            if kind == "alternate":
                alternate = self.service.hooks(es.name).alternate_collection_key
                resource = Resource("collection", es, where, [], values={alternate: value})
        for index, seg in enumerate(segments[1:], start=1):
            last = index == len(segments) - 1
            name = seg.name
            if name == "$count":
                if resource.kind != "collection" or not last or seg.key is not None:
                    raise BadRequest("$count must follow a collection and end the path")
                resource.kind = "count"
                continue
            if name == "$value":
                if resource.kind != "property" or not last:
                    raise BadRequest("$value must follow a primitive property and end the path")
                resource.kind = "value"
                continue
            if name == "$ref":
                raise NotImplementedYet("$ref is not supported")
            if resource.kind != "entity":
                raise NotFound(f"Resource not found for the segment '{name}'")
            et = resource.entity_set.entity_type
            nav = et.navigation(name)
            if nav is not None:
                parent_es, parent_where = resource.entity_set, resource.where
                target = self.model.target_set(parent_es, nav)
                parent_table = self.store.table(parent_es.name)
                table = self.store.table(target.name)
                join = [table.c[remote].in_(sa.select(parent_table.c[local]).where(*parent_where))
                        for local, remote in nav.join]
                parents = [*resource.parents, (parent_es, parent_where)]
                resource = Resource("collection" if nav.collection else "entity", target, join, parents,
                                    join=list(nav.join), nav_single=not nav.collection)
                if seg.key is not None:
                    if not nav.collection:
                        raise BadRequest(f"'{nav.name}' is single-valued and takes no key")
                    kind, value, where = self._key_condition(target, seg.key)
                    if kind == "alternate":
                        raise BadRequest(f"The key of {target.name} is a number")
                    resource.kind, resource.key, resource.where = kind, value, join + where
                    resource.nav_single = False
                continue
            prop = et.prop(name)
            if prop is not None and seg.key is None:
                resource.kind, resource.prop = "property", prop.name
                continue
            raise NotFound(f"Resource not found for the segment '{name}'")
        return resource

    # ---- dispatch ------------------------------------------------------------------------------------------
    async def _dispatch(self, request, url: ParsedUrl, ctx: RequestContext, res: Resource):
        method = request.method
        es = res.entity_set
        self.service.authorize(ctx.principal, method, es)
        if res.kind in ("entity", "property", "value") and res.key is not None:
            self.service.hooks(es.name).authorize_key(ctx.principal, res.key)
        if method in ("GET", "HEAD"):  # aiohttp sends no body for HEAD
            return await self._get(request, url, ctx, res)
        if method == "POST":
            if res.kind != "collection":
                raise MethodNotAllowed("POST is allowed on collections only", headers={"Allow": "GET, PATCH, PUT, DELETE"})
            if res.values is None and res.join is None and res.where:
                raise MethodNotAllowed("POST to this collection is not supported", headers={"Allow": "GET"})
            return await self._create(request, url, ctx, res)
        if method in ("PATCH", "PUT", "MERGE"):
            if res.kind == "property":
                return await self._update(request, url, ctx, res, property_body=True)
            if res.kind != "entity":
                raise MethodNotAllowed(f"{method} is allowed on single entities only", headers={"Allow": "GET, POST"})
            return await self._update(request, url, ctx, res)
        if method == "DELETE":
            if res.kind == "collection" and self.service.hooks(es.name).collection_delete:
                return await self._delete_collection(request, url, ctx, res)
            if res.kind != "entity":
                raise MethodNotAllowed("DELETE is allowed on single entities only", headers={"Allow": "GET, POST"})
            return await self._delete(request, ctx, res)
        raise MethodNotAllowed(f"Method {method} is not allowed",
                               headers={"Allow": "GET, HEAD, POST, PATCH, PUT, DELETE"})

    def _reader(self, ctx: RequestContext) -> Reader:
        return Reader(self.model, self.store, self.service.hooks, self.signer, ctx)

    async def _parents_exist(self, conn, res: Resource) -> None:
        for parent_es, where in res.parents:
            table = self.store.table(parent_es.name)
            query = sa.select(sa.literal(1)).select_from(table).where(*where).limit(1)
            found = await conn.fetch(query) if isinstance(conn, ReadSession) else (await conn.execute(query)).all()
            if not found:
                raise NotFound(f"The {parent_es.entity_type.name} addressed by the path does not exist")

    async def _get(self, request, url: ParsedUrl, ctx: RequestContext, res: Resource):
        es = res.entity_set
        if res.kind in ("count", "value"):  # raw text whatever was asked; JSON-only clients still get an answer
            fmt = Format("text/plain")
        else:
            fmt = negotiate(url.options.get("$format"), request.headers.get("Accept"))
        ctx.metadata, ctx.ieee754 = fmt.metadata, fmt.ieee754
        reader = self._reader(ctx)
        serializer = Serializer(self.model, ctx)
        if res.kind in ("entity", "property", "value"):
            options = parse_options(self.model, es, {k: v for k, v in url.options.items()
                                                     if k in ("$select", "$expand", "$format")})
        else:
            options = parse_options(self.model, es, url.options)
        async with self.store.read() as conn:
            await self._parents_exist(conn, res)
            if res.kind == "count":
                count = await reader.count(conn, es, res.where, options)
                return web.Response(text=str(count), content_type="text/plain", charset="utf-8")
            if res.kind == "collection":
                page = await reader.collection(conn, es, res.where, options)
                next_link = self._next_link(ctx, url, page.next_token)
                payload = serializer.collection(es, page.rows, options, count=page.count, next_link=next_link)
                return self._json(payload, fmt, ctx)
            row = await reader.entity(conn, es, res.where, options)
        if row is None:
            if res.nav_single:
                return web.Response(status=204)
            raise NotFound(f"No {es.entity_type.name} with {es.entity_type.key} {res.key!r}")
        headers = {"ETag": row["@odata.etag"]}
        if _etag_matches(request.headers.get("If-None-Match"), row["@odata.etag"]):
            return web.Response(status=304, headers=headers)
        if res.kind == "entity":
            return self._json(serializer.single(es, row, options), fmt, ctx, headers=headers)
        prop = es.entity_type.properties[res.prop]
        if prop.write_only:
            raise BadRequest(f"Property '{prop.name}' is write-only")
        value = row.get(prop.name)
        if value is None:
            return web.Response(status=204)
        if res.kind == "value":
            if prop.collection:
                raise BadRequest("$value is not available for a collection property")
            text = value.isoformat().replace("+00:00", "Z") if isinstance(value, dt.datetime) else (
                str(value).lower() if isinstance(value, bool) else str(value))
            return web.Response(text=text, content_type="text/plain", charset="utf-8")
        if ctx.ieee754 and prop.type in ("Edm.Int64", "Edm.Decimal"):
            value = str(value)
        key_part = entity_url(ctx, es, row[es.entity_type.key])[len(ctx.root):]
        payload = {"@odata.context": context_url(ctx, f"{key_part}/{prop.name}"), "value": value}
        if ctx.metadata == "none":
            payload.pop("@odata.context")
        return self._json(payload, fmt, ctx, headers=headers)

    def _next_link(self, ctx: RequestContext, url: ParsedUrl, token: str | None) -> str | None:
        if token is None:
            return None
        kept = [part for part in url.raw_query.split("&") if part and part.split("=", 1)[0].lower() not in
                ("$skiptoken", "%24skiptoken", "$skip", "%24skip", "$top", "%24top")]
        kept.append("$skiptoken=" + quote(token, safe=""))
        path = url.segments
        path_text = "/".join(quote(s.name, safe="$") + (f"({quote(s.key, safe=chr(39) + '=,')})" if s.key is not None
                                                          else "") for s in path)
        return f"{ctx.root}{path_text}?{'&'.join(kept)}"

    # ---- writes --------------------------------------------------------------------------------------------
    @staticmethod
    def _write_input(request, url: ParsedUrl, ctx: RequestContext, hooks: EntityHooks, data: dict):
        """Split CData's numbered members off a write body and settle the response format."""
        data, arrays = bodies.array_members(data, hooks.array_members)
        fmt = negotiate(url.options.get("$format"), request.headers.get("Accept"))
        ctx.metadata, ctx.ieee754 = fmt.metadata, fmt.ieee754
        return data, arrays, fmt

    def _write_context(self, conn, ctx: RequestContext) -> WriteContext:
        return WriteContext(conn=conn, model=self.model, tables=self.store.table, principal=ctx.principal,
                            now=utcnow())

    async def _create(self, request, url: ParsedUrl, ctx: RequestContext, res: Resource):
        es = res.entity_set
        if not es.insertable:
            raise MethodNotAllowed(f"{es.name} is read-only", headers={"Allow": "GET"})
        hooks = self.service.hooks(es.name)
        data = bodies.decode_json(await request.read(), request.headers.get("Content-Type"))
        data, arrays, fmt = self._write_input(request, url, ctx, hooks, data)
        et = es.entity_type
        table = self.store.table(es.name)
        async with self.store.write() as conn:
            await self._parents_exist(conn, res)
            tx = self._write_context(conn, ctx)
            tx.extras = arrays
            values = bodies.entity_values(self.model, es, data, creating=True, lenient_strings=hooks.lenient_strings)
            for name, value in (res.values or {}).items():
                if values.get(name) not in (None, value):
                    raise BadRequest(f"'{name}' conflicts with the collection addressed by the path")
                values[name] = value
            if res.join:
                parent_es, parent_where = res.parents[-1]
                parent_table = self.store.table(parent_es.name)
                for local, remote in res.join:
                    parent_value = (await conn.execute(sa.select(parent_table.c[local]).where(*parent_where))).scalar()
                    if values.get(remote) not in (None, parent_value):
                        raise BadRequest(f"'{remote}' conflicts with the entity addressed by the path")
                    values[remote] = parent_value
            bodies.apply_defaults(es, values)
            await hooks.before_create(tx, values)
            if values.get(et.key) is not None:
                exists = (await conn.execute(sa.select(sa.literal(1)).where(table.c[et.key] == values[et.key]))).first()
                if exists:
                    raise Conflict(f"{et.name} '{values[et.key]}' already exists")
            try:
                result = await conn.execute(table.insert().values(**values))
            except IntegrityError as exc:
                raise Conflict(f"{et.name} conflicts with an existing entity") from exc
            if values.get(et.key) is None:
                values[et.key] = result.inserted_primary_key[0]
            await hooks.after_create(tx, values)
        await hooks.after_commit()
        location = entity_url(ctx, es, values[et.key])
        row = await self._read_back(ctx, es, values[et.key])
        row.update(tx.response)
        headers = {"Location": location, "ETag": row["@odata.etag"]}
        if ctx.prefer.get("return") == "minimal":
            headers["OData-EntityId"] = location
            headers["Preference-Applied"] = ", ".join([*ctx.applied, "return=minimal"])
            return web.Response(status=204, headers=headers)
        serializer = Serializer(self.model, ctx)
        return self._json(serializer.single(es, row, QueryOptions(es)), fmt, ctx, status=201, headers=headers)

    async def _read_back(self, ctx: RequestContext, es: EntitySet, key) -> dict:
        table = self.store.table(es.name)
        async with self.store.read() as conn:
            row = await self._reader(ctx).entity(conn, es, [table.c[es.entity_type.key] == key], QueryOptions(es))
        if row is None:
            raise NotFound(f"No {es.entity_type.name} with {es.entity_type.key} {key!r}")
        return row

    async def _locked_row(self, conn, es: EntitySet, res: Resource) -> dict:
        table = self.store.table(es.name)
        query = sa.select(*table.c).where(*res.where)
        if self.store.dialect == "postgresql":
            query = query.with_for_update()
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            await self._parents_exist(conn, res)
            raise NotFound(f"No {es.entity_type.name} with {es.entity_type.key} {res.key!r}")
        return dict(row)

    def _check_if_match(self, request, es: EntitySet, old: dict) -> None:
        if_match = request.headers.get("If-Match")
        if if_match is None:
            return
        current = etag([old[name] for name in es.concurrency])
        if not _etag_matches(if_match, current):
            raise PreconditionFailed("The entity was changed by someone else (ETag mismatch)")

    async def _update(self, request, url: ParsedUrl, ctx: RequestContext, res: Resource, *,
                      property_body: bool = False):
        es = res.entity_set
        if not es.updatable:
            raise MethodNotAllowed(f"{es.name} is read-only", headers={"Allow": "GET"})
        hooks = self.service.hooks(es.name)
        data = bodies.decode_json(await request.read(), request.headers.get("Content-Type"))
        if property_body:
            if set(data) - {"value", "@odata.context"}:
                raise BadRequest("A property update body is {\"value\": ...}")
            data = {res.prop: data.get("value")}
        data, arrays, fmt = self._write_input(request, url, ctx, hooks, data)
        et = es.entity_type
        table = self.store.table(es.name)
        async with self.store.write() as conn:
            old = await self._locked_row(conn, es, res)
            self._check_if_match(request, es, old)
            tx = self._write_context(conn, ctx)
            tx.extras = arrays
            changes = bodies.entity_values(self.model, es, data, creating=False,
                                           lenient_strings=hooks.lenient_strings)
            if et.key in changes:
                if changes[et.key] != old[et.key]:
                    raise BadRequest(f"The key '{et.key}' cannot be changed")
                del changes[et.key]
            await hooks.before_update(tx, old, changes)
            if changes:
                await conn.execute(table.update().where(table.c[et.key] == old[et.key]).values(**changes))
        await hooks.after_commit()
        row = await self._read_back(ctx, es, old[et.key])
        row.update(tx.response)
        headers = {"ETag": row["@odata.etag"]}
        if ctx.prefer.get("return") == "minimal":
            headers["Preference-Applied"] = ", ".join([*ctx.applied, "return=minimal"])
            return web.Response(status=204, headers=headers)
        return self._json(Serializer(self.model, ctx).single(es, row, QueryOptions(es)), fmt, ctx, headers=headers)

    async def _delete(self, request, ctx: RequestContext, res: Resource):
        es = res.entity_set
        if not es.deletable:
            raise MethodNotAllowed(f"{es.name} is read-only", headers={"Allow": "GET"})
        hooks = self.service.hooks(es.name)
        table = self.store.table(es.name)
        key = es.entity_type.key
        async with self.store.write() as conn:
            old = await self._locked_row(conn, es, res)
            self._check_if_match(request, es, old)
            await hooks.before_delete(self._write_context(conn, ctx), old)
            await conn.execute(table.delete().where(table.c[key] == old[key]))
        await hooks.after_commit()
        return web.Response(status=204)

    async def _delete_collection(self, request, url: ParsedUrl, ctx: RequestContext, res: Resource):
        """Set-based delete (pruning the request log): ``DELETE Requests?$filter=Timestamp lt …``."""
        es = res.entity_set
        table = self.store.table(es.name)
        options = parse_options(self.model, es, {k: v for k, v in url.options.items() if k == "$filter"})
        where = res.where + self._reader(ctx).conditions(es, table, options)
        async with self.store.write() as conn:
            result = await conn.execute(table.delete().where(*where))
        return web.Response(status=204, headers={"X-Deleted-Count": str(result.rowcount)})

    # ---- actions -------------------------------------------------------------------------------------------
    async def _action(self, request, url: ParsedUrl, ctx: RequestContext, action: Action):
        if request.method != "POST":
            raise MethodNotAllowed(f"{action.name} is an action: use POST", headers={"Allow": "POST"})
        self.service.authorize(ctx.principal, "POST", action)
        fmt = negotiate(url.options.get("$format"), request.headers.get("Accept"))
        ctx.metadata, ctx.ieee754 = fmt.metadata, fmt.ieee754
        data = bodies.decode_json(await request.read(), request.headers.get("Content-Type"), allow_empty=True)
        params = self._action_params(action, data, url)
        handler = self.service.action_handler(action)
        if handler is None:
            raise NotImplementedYet(f"The action {action.name} is not implemented yet")
        result = await handler(ActionCall(action.name, params, ctx))
        complex_type = self.model.complex_types.get(action.return_type)
        convert = _ieee754_converter(complex_type) if ctx.ieee754 and complex_type else None
        if action.return_collection:
            rows = [convert(r) for r in result] if convert else result
            payload = {"@odata.context": context_url(ctx, f"Collection({self.model.namespace}.{action.return_type})"),
                       "value": rows}
        else:
            payload = {"@odata.context": context_url(ctx, f"{self.model.namespace}.{action.return_type}"),
                       **(convert(result) if convert else result)}
        if ctx.metadata == "none":
            payload.pop("@odata.context")
        return self._json(payload, fmt, ctx)

    def _action_params(self, action: Action, data: dict, url: ParsedUrl) -> dict:
        params: dict[str, Any] = {}
        collections = {name for name, p in action.parameters.items() if p.collection}
        data, numbered = bodies.array_members(data, frozenset(collections))
        length = max((max(n) for n in numbered.values()), default=0)
        arrays = {name: bodies.aligned(items, length) for name, items in numbered.items()}
        for key, value in data.items():
            if key.lower() == "workspaceid":
                if isinstance(value, str) and value.lower() != "default":
                    raise NotFound(f"Workspace '{value}' does not exist")
                continue
            if key.startswith("@"):
                continue
            param = action.parameter(key)
            if param is None:
                raise BadRequest(f"The action {action.name} has no parameter '{key}'", target=key)
            if param.collection:
                params[param.name] = coerce_collection(param.type, value if isinstance(value, list) else [value],
                                                       param.name)
            else:
                params[param.name] = coerce(param.type, value, param.name)
        for name, items in arrays.items():
            if name in params:
                raise BadRequest(f"Give '{name}' either as an array or as {name}#N members, not both")
            param = action.parameters[name]
            params[name] = [coerce(param.type, v, f"{name}#{i}") for i, v in enumerate(items, start=1)]
        return params

    # ---- helpers -------------------------------------------------------------------------------------------
    @staticmethod
    def _only(request, *methods: str) -> None:
        if request.method not in methods:
            raise MethodNotAllowed(f"Method {request.method} is not allowed here", headers={"Allow": ", ".join(methods)})

    @staticmethod
    def _json(payload, fmt: Format, ctx: RequestContext | None = None, *, status: int = 200,
              headers: dict | None = None) -> web.Response:
        response = web.Response(body=dumps(payload), status=status, headers=headers)
        response.headers["Content-Type"] = fmt.content_type
        if ctx is not None and ctx.applied:
            response.headers["Preference-Applied"] = ", ".join(ctx.applied)
        return response


def _prefer(values: list[str]) -> dict[str, str]:
    prefer: dict[str, str] = {}
    for header in values:
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            if name:
                prefer[name.strip().lower()] = value.strip().strip('"')
    return prefer


def _etag_matches(header: str | None, current: str) -> bool:
    if header is None:
        return False
    candidates = [h.strip() for h in header.split(",")]
    return "*" in candidates or current in candidates or current.removeprefix("W/") in candidates


def _ieee754_converter(complex_type):
    wide = {name for name, p in complex_type.properties.items() if p.type in ("Edm.Int64", "Edm.Decimal")}

    def convert(row: dict) -> dict:
        return {k: (str(v) if k in wide and v is not None else v) for k, v in row.items()}

    return convert
