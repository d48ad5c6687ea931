"""OData 4.0 feeds as a source: entity sets are tables, ``$metadata`` gives columns, types and keys.

Rows are read page by page following ``@odata.nextLink`` (``Prefer: odata.maxpagesize`` asks for pages of about a
batch) and regrouped into batches, so memory holds at most one page and one batch. ``$select``, ``$filter``,
``$orderby`` and ``$top`` are pushed down from the task's columns, conditions and a simple SELECT.
Numbers are requested as strings (``IEEE754Compatible=true``) and otherwise parsed as decimals, so 18-digit values
are exact.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode, urljoin

import aiohttp
import orjson

from odata_sync.errors import BadRequest, ConnectionFailed

from . import values
from .base import BatchReader, ColumnInfo, Connector, TableInfo
from .odata_metadata import EntitySet, parse_metadata
from .odata_query import ODataQuery, filter_for, parse_select

_ACCEPT_JSON = "application/json;odata.metadata=minimal;IEEE754Compatible=true"
_NEXT_LINK = ("@odata.nextLink", "odata.nextLink")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return values.to_text(value)


def _converter(prop_canonical: Any, edm_type: str) -> values.Converter | None:
    coerce = values.coercer(prop_canonical)
    if prop_canonical.kind == "binary":
        return values.compose(lambda v: values.b64decode(v) if isinstance(v, str) else v, coerce)
    if prop_canonical.kind == "json" and edm_type != "Edm.String":
        return values.compose(lambda v: orjson.dumps(v, default=_json_default).decode(), coerce)
    return values.compose(coerce)


class _Reader:
    def __init__(self, connector: ODataConnector, url: str, names: list[str], converters: list, page: int,
                 top: int | None) -> None:
        self._connector, self._next, self._names, self._converters = connector, url, names, converters
        self._page, self._left = page, top
        self._buffer: deque[tuple] = deque()

    async def fetch(self, size: int) -> list[tuple]:
        while len(self._buffer) < size and self._next and (self._left is None or self._left > 0):
            url, self._next = self._next, None
            body = await self._connector._get_json(url, prefer=f"odata.maxpagesize={self._page}")
            rows = body.get("value")
            if not isinstance(rows, list):
                raise ConnectionFailed(f"OData: the answer from {url} has no 'value' array")
            if self._left is not None:
                rows = rows[:self._left]
                self._left -= len(rows)
            names = self._names
            self._buffer.extend(tuple(row.get(name) for name in names) for row in rows)
            link = next((body[k] for k in _NEXT_LINK if body.get(k)), None)
            self._next = urljoin(url, link) if link else None
        count = min(size, len(self._buffer))
        batch = [self._buffer.popleft() for _ in range(count)]
        return values.convert_rows(batch, self._converters)

    async def close(self) -> None:
        self._buffer.clear()
        self._next = None


class ODataConnector(Connector):
    provider = "OData"
    writable = False
    driver_errors = (aiohttp.ClientError,)

    def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        url = str(settings["URL"]).strip()  # an http(s) address, checked by connstr.validate
        self.url = url if url.endswith("/") else url + "/"
        self.page_size: int | None = settings.get("PageSize")
        self._session: aiohttp.ClientSession | None = None
        self._sets: dict[str, EntitySet] | None = None

    # --- HTTP -------------------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"OData-MaxVersion": "4.0", "User-Agent": "odata-sync"}
        if self.settings.get("AuthToken"):
            headers["x-cdata-authtoken"] = self.settings["AuthToken"]
        elif self.settings.get("User"):
            pair = f"{self.settings['User']}:{self.settings.get('Password') or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    async def _get(self, url: str, *, accept: str, prefer: str | None = None) -> tuple[bytes, str]:
        if self._session is None:
            raise ConnectionFailed("OData: the connection is closed")
        headers = {"Accept": accept}
        if prefer:
            headers["Prefer"] = prefer
        async with self._session.get(url, headers=headers) as response:
            body = await response.read()
            content_type = response.headers.get("Content-Type", "")
            if response.status >= 400:
                raise ConnectionFailed(f"OData: HTTP {response.status} {response.reason or ''} from {url}"
                                       f"{_error_text(body, content_type)}")
            return body, content_type

    async def _get_json(self, url: str, *, prefer: str | None = None) -> dict:
        body, content_type = await self._get(url, accept=_ACCEPT_JSON, prefer=prefer)
        if "json" not in content_type.lower():
            raise ConnectionFailed(f"OData: {url} answered {content_type.split(';')[0] or 'without a content type'}, "
                                   "not OData JSON (is the URL the service root of an OData 4.0 feed?)")
        try:
            if "ieee754compatible=true" in content_type.lower().replace(" ", ""):
                document = orjson.loads(body)
            else:  # numbers may be JSON numbers: keep decimals exact
                document = json.loads(body, parse_float=Decimal)
        except ValueError as exc:
            raise ConnectionFailed(f"OData: {url} answered invalid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ConnectionFailed(f"OData: {url} answered JSON that is not an object")
        return document

    async def _metadata(self) -> dict[str, EntitySet]:
        if self._sets is None:
            url = self.url + "$metadata"
            body, content_type = await self._get(url, accept="application/xml")
            if "xml" not in content_type.lower():
                raise ConnectionFailed(f"OData: {url} answered {content_type.split(';')[0] or 'no content type'}, "
                                       "not the XML $metadata of an OData 4.0 service (is URL the service root?)")
            self._sets = parse_metadata(body)
        return self._sets

    async def _entity_set(self, name: str) -> EntitySet:
        sets = await self._metadata()
        found = sets.get(name) or next((s for n, s in sets.items() if n.lower() == name.lower()), None)
        if found is None:
            raise BadRequest(f"table '{name}' was not found (no such entity set)", target="Table")
        return found

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def _open(self, *, create_missing: bool = False) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers(),
                                              timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _ping(self) -> None:
        await self._metadata()

    # --- metadata ---------------------------------------------------------------------------------------------------

    async def _list_tables(self, kind: str, schema: str | None) -> list[TableInfo]:
        if kind == "VIEWS":
            return []
        return [TableInfo(name, None, None, "TABLE") for name in await self._metadata()]

    async def _list_columns(self, table: str, schema: str | None) -> list[ColumnInfo]:
        try:
            entity_set = await self._entity_set(table)
        except BadRequest:
            return []
        return [ColumnInfo.of(p.name, p.canonical, nullable=p.nullable, primary_key=p.name in entity_set.keys,
                              native_type=p.edm_type, ordinal=i + 1) for i, p in enumerate(entity_set.properties)]

    async def _estimate_rows(self, table: str, schema: str | None) -> int | None:
        entity_set = await self._entity_set(table)
        try:
            body, _ = await self._get(f"{self.url}{quote(entity_set.name)}/$count", accept="text/plain")
            return int(body.decode().strip())
        except (ConnectionFailed, ValueError, UnicodeDecodeError):
            return None  # $count is optional for a feed

    # --- reading ----------------------------------------------------------------------------------------------------

    async def _start_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                          where: list, order_by: list[str], batch_size: int) -> tuple[list[ColumnInfo], BatchReader]:
        sets = await self._metadata()

        def resolve(set_name: str, name: str) -> tuple[str, str]:
            if not set_name:
                found = sets.get(name) or next((s for n, s in sets.items() if n.lower() == name.lower()), None)
                if found is None:
                    raise BadRequest(f"table '{name}' was not found (no such entity set)", target="Table")
                return found.name, ""
            prop = sets[set_name].property(name)
            if prop is None:
                raise BadRequest(f"column '{name}' is not a property of '{set_name}'", target=name)
            return prop.name, prop.edm_type

        plan = parse_select(query, resolve) if query is not None else ODataQuery(resolve("", table[1])[0])
        entity_set = sets[plan.entity_set]
        if columns:
            plan.select = [resolve(entity_set.name, c)[0] for c in columns]
        extra = filter_for(where, lambda c: resolve(entity_set.name, c))
        if extra:
            plan.filter = f"({plan.filter}) and {extra}" if plan.filter else extra
        for term in order_by:
            name, _, direction = term.strip().partition(" ")
            plan.orderby.append(resolve(entity_set.name, name)[0] + (" desc" if direction.strip().upper() == "DESC"
                                                                      else ""))
        selected = [entity_set.property(n) for n in plan.select] if plan.select else entity_set.properties
        described = [ColumnInfo.of(p.name, p.canonical, nullable=p.nullable, native_type=p.edm_type,
                                   primary_key=p.name in entity_set.keys, ordinal=i + 1)
                     for i, p in enumerate(selected)]
        options: dict[str, str] = {}
        if plan.select:
            options["$select"] = ",".join(plan.select)
        if plan.filter:
            options["$filter"] = plan.filter
        if plan.orderby:
            options["$orderby"] = ",".join(plan.orderby)
        if plan.top is not None:
            options["$top"] = str(plan.top)
        url = self.url + quote(entity_set.name)
        if options:
            url += "?" + urlencode(options, quote_via=quote, safe="$,'()")
        converters = [_converter(p.canonical, p.edm_type) for p in selected]
        reader = _Reader(self, url, [p.name for p in selected], converters, self.page_size or batch_size, plan.top)
        return described, reader


def _error_text(body: bytes, content_type: str) -> str:
    """The feed's own error message, briefly (an HTML error page is not worth quoting)."""
    if "json" in content_type.lower():
        try:
            error = orjson.loads(body).get("error", {})
            message = error.get("message") if isinstance(error, dict) else None
            if isinstance(message, dict):  # OData 2/3 style
                message = message.get("value")
            if message:
                return f": {str(message)[:300]}"
        except (orjson.JSONDecodeError, AttributeError):
            pass
    if "html" in content_type.lower() or not body:
        return ""
    text = body[:300].decode(errors="replace").strip()
    return f": {' '.join(text.split())}" if text else ""

