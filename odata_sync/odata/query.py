"""Turns a resolved resource plus query options into SQLAlchemy Core SELECTs, runs them, and shapes rows.

Rows come back as dicts keyed by declared property names, with expanded navigation nested and each entity's ETag
under ``@odata.etag``; ``serialize`` adds the rest of the protocol annotations.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa

from odata_sync.edm.model import EntitySet, Model
from odata_sync.errors import BadRequest
from odata_sync.odata import paging, search
from odata_sync.odata.filter import FilterCompiler, parse_expression
from odata_sync.odata.hooks import EntityHooks, RequestContext
from odata_sync.odata.options import QueryOptions, visible_properties
from odata_sync.store.engine import ReadSession, Store

ROW_CACHE_ENTRIES = 100_000


@dataclass
class Page:
    rows: list[dict]
    count: int | None = None
    next_token: str | None = None


@dataclass
class Reader:
    """Reads entity sets for one request."""

    model: Model
    store: Store
    hooks: object  # callable: entity-set name -> EntityHooks
    signer: paging.TokenSigner
    ctx: RequestContext
    _compilers: dict = field(default_factory=dict)

    # ---- building blocks ---------------------------------------------------------------------------------
    def _hooks(self, es: EntitySet) -> EntityHooks:
        return self.hooks(es.name)

    def compiler(self, es: EntitySet, table: sa.FromClause, what: str = "$filter") -> FilterCompiler:
        hooks = self._hooks(es)
        return FilterCompiler(self.model, es, table, self.store.table, self.store.dialect,
                              hooks.hidden(self.ctx.principal) | es.non_filterable, what)

    def conditions(self, es: EntitySet, table: sa.Table, options: QueryOptions | None) -> list:
        where = []
        row_filter = self._hooks(es).row_filter(self.ctx.principal, table)
        if row_filter is not None:
            where.append(row_filter)
        if options is None:
            return where
        if options.filter:
            where.append(self.compiler(es, table).boolean(parse_expression(options.filter)))
        if options.search is not None:
            hidden = self._hooks(es).hidden(self.ctx.principal) | es.non_filterable
            columns = [table.c[p.name] for p in es.entity_type.properties.values()
                       if p.type == "Edm.String" and not p.collection and not p.write_only and p.name not in hidden]
            where.append(search.compile_search(options.search, columns))
        return where

    def sort_keys(self, es: EntitySet, table: sa.Table, options: QueryOptions) -> list[tuple[sa.ColumnElement, bool]]:
        keys = []
        compiler = self.compiler(es, table, "$orderby")
        for item in options.orderby:
            typed = compiler.value(parse_expression(item.expression, "$orderby"))
            if typed.edm is not None and typed.edm.startswith("Collection"):
                raise BadRequest("Cannot order by a collection", target="$orderby")
            keys.append((typed.expr, item.descending))
        key_col = table.c[es.entity_type.key]
        if not any(expr is key_col for expr, _ in keys):
            keys.append((key_col, False))
        return keys

    def columns(self, es: EntitySet, options: QueryOptions) -> list[str]:
        """Declared properties to fetch: the selection plus what ETags and expansion need, minus hidden ones."""
        et = es.entity_type
        hidden = self._hooks(es).hidden(self.ctx.principal)
        wanted = set(visible_properties(es, options)) | {et.key} | set(es.concurrency)
        for nav_name in options.expand:
            wanted |= {local for local, _ in et.navigations[nav_name].join}
        return [p.name for p in et.properties.values()
                if p.name in wanted and not p.write_only and p.name not in hidden]

    # ---- reading -------------------------------------------------------------------------------------------
    async def count(self, conn: ReadSession, es: EntitySet, base: list, options: QueryOptions | None) -> int:
        table = self.store.table(es.name)
        where = base + self.conditions(es, table, options)
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return (await conn.fetch(query))[0][0]

    async def collection(self, conn: ReadSession, es: EntitySet, base: list, options: QueryOptions,
                         paged: bool = True) -> Page:
        table = self.store.table(es.name)
        where = base + self.conditions(es, table, options)
        keys = self.sort_keys(es, table, options)
        sort_columns = [expr.label(f"_k{i}") for i, (expr, _) in enumerate(keys)]
        cached = options.select is None and self._cacheable(es)
        names = [es.entity_type.key, es.concurrency[0]] if cached else self.columns(es, options)
        query = self._select(table, names, sort_columns)
        query = query.where(*where).order_by(*paging.order_clauses(keys))

        remaining = options.top
        if options.skiptoken:
            values, remaining = self.signer.decode(options.skiptoken)
            query = query.where(paging.after(keys, values))
        elif options.skip:
            query = query.offset(options.skip)
        page_size = self.page_size() if paged else None
        limit = remaining
        if page_size is not None and (limit is None or page_size < limit):
            limit = page_size
        if limit is not None:
            query = query.limit(limit + 1)

        raw = await conn.fetch(query)
        next_token = None
        if limit is not None and len(raw) > limit:
            raw = raw[:limit]
            left = None if remaining is None else remaining - limit
            if left is None or left > 0:
                last = raw[-1]
                next_token = self.signer.encode([last[len(names) + i] for i in range(len(keys))], left)
        total = await self.count(conn, es, base, options) if options.count else None
        rows = await self._cached_rows(conn, es, raw, copy=bool(options.expand)) if cached \
            else self._shape(es, names, raw)
        if options.expand:
            await self.expand(conn, es, rows, options)
        return Page(rows, total, next_token)

    def _cacheable(self, es: EntitySet) -> bool:
        """Rows of this set may come from the store's row cache: one timestamp tags every version of a row
        (writers move it on every change), and this caller sees every property."""
        hooks = self._hooks(es)
        return (hooks.cacheable and len(es.concurrency) == 1 and not hooks.hidden(self.ctx.principal)
                and es.entity_type.properties[es.concurrency[0]].type == "Edm.DateTimeOffset")

    async def _cached_rows(self, conn: ReadSession, es: EntitySet, raw: list, copy: bool) -> list[dict]:
        """Rows for (key, tag) pairs: from the cache where the tag still matches, else read in one query.
        ``copy`` when the caller will add to the rows (expansion); otherwise cached rows are shared read-only."""
        cache = self.store.row_cache
        name = es.name
        rows: list = [None] * len(raw)
        missing: dict = {}
        for index, record in enumerate(raw):
            entry = cache.get((name, record[0]))
            if entry is not None and entry[0] == record[1]:
                rows[index] = dict(entry[1]) if copy else entry[1]
            else:
                missing[record[0]] = index
        if missing:
            table = self.store.table(name)
            key, tag = es.entity_type.key, es.concurrency[0]
            names = self.columns(es, QueryOptions(es))
            fresh = await conn.fetch(self._select(table, names).where(self.store.in_list(table.c[key], list(missing))))
            if len(cache) + len(fresh) > ROW_CACHE_ENTRIES:
                cache.clear()
            for row in self._shape(es, names, fresh):
                cache[(name, row[key])] = (row[tag], row)
                rows[missing[row[key]]] = dict(row) if copy else row
        return [row for row in rows if row is not None]  # a row deleted between the two reads is left out

    @staticmethod
    def _select(table: sa.Table, names: list[str], extra: list | None = None) -> sa.Select:
        """SELECT the named columns; ``SELECT table`` when they are all of them (much cheaper to build)."""
        if len(names) == len(table.c) and all(c.name == n for c, n in zip(table.c, names, strict=True)):
            return sa.select(table, *(extra or ()))
        return sa.select(*(table.c[n] for n in names), *(extra or ()))

    def page_size(self) -> int:
        size = self.ctx.max_page_size
        preferred = self.ctx.prefer.get("odata.maxpagesize") or self.ctx.prefer.get("maxpagesize")
        if preferred and preferred.isdigit() and 0 < int(preferred) < size:
            size = int(preferred)
            self.ctx.applied.append(f"odata.maxpagesize={size}")
        return size

    async def entity(self, conn: ReadSession, es: EntitySet, base: list, options: QueryOptions) -> dict | None:
        table = self.store.table(es.name)
        where = base + self.conditions(es, table, None)
        names = self.columns(es, options)
        raw = await conn.fetch(self._select(table, names).where(*where).limit(2))
        if not raw:
            return None
        rows = self._shape(es, names, raw[:1])
        if options.expand:
            await self.expand(conn, es, rows, options)
        return rows[0]

    def _shape(self, es: EntitySet, names: list[str], raw: list) -> list[dict]:
        """Raw driver rows as dicts: the ETag first (as the payload wants it), then the fetched properties."""
        build = self.store.row_builder(self.store.table(es.name), tuple(names))
        hooks = self._hooks(es)
        present = type(hooks).present is not EntityHooks.present
        concurrency = es.concurrency
        single = concurrency[0] if len(concurrency) == 1 else None
        rows = [build(record) for record in raw]
        for row in rows:
            row["@odata.etag"] = etag([row[single]] if single else [row[n] for n in concurrency])
            if present:
                hooks.present(self.ctx.principal, row)
        return rows

    async def expand(self, conn: ReadSession, es: EntitySet, rows: list[dict], options: QueryOptions) -> None:
        et = es.entity_type
        for nav_name, nested in options.expand.items():
            nav = et.navigations[nav_name]
            target = self.model.target_set(es, nav)
            table = self.store.table(target.name)
            locals_, remotes = [loc for loc, _ in nav.join], [r for _, r in nav.join]
            parent_keys = {tuple(row[loc] for loc in locals_) for row in rows}
            parent_keys.discard(tuple(None for _ in locals_))
            if len(locals_) != 1:
                raise BadRequest("Composite navigation joins are not supported")
            values = [k[0] for k in parent_keys if k[0] is not None]
            children: dict[tuple, list[dict]] = defaultdict(list)
            if values:
                base = [self.store.in_list(table.c[remotes[0]], values)]
                child_opts = QueryOptions(target, select=nested.select, expand=nested.expand, filter=nested.filter,
                                          orderby=nested.orderby, search=nested.search)
                if nested.select is not None and remotes[0] not in nested.select:
                    child_opts.select = [*nested.select, remotes[0]]
                page = await self.collection(conn, target, base, child_opts, paged=False)
                for child in page.rows:
                    children[(child[remotes[0]],)].append(child)
            for row in rows:
                found = children.get(tuple(row[loc] for loc in locals_), [])
                if nav.collection:
                    total = len(found)
                    start = nested.skip or 0
                    found = found[start:] if nested.top is None else found[start:start + nested.top]
                    if nested.count:
                        row[f"{nav_name}@odata.count"] = total
                    row[nav_name] = found
                else:
                    row[nav_name] = found[0] if found else None


def etag(values: list) -> str:
    """A weak ETag from the set's Core.OptimisticConcurrency values (for most sets: Modified, as stored text)."""
    if len(values) == 1:
        value = values[0]
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(value, str) and '"' not in value:
            return f'W/"{value}"'
    digest = hashlib.blake2b(orjson.dumps(values, default=str), digest_size=8).hexdigest()
    return f'W/"{digest}"'
