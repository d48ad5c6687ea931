"""Request bodies: JSON decoding, and entity bodies checked against the EDM (names case-insensitive)."""

from __future__ import annotations

import re

import orjson

from odata_sync.edm.model import EntitySet, Model
from odata_sync.errors import BadRequest, NotImplementedYet, UnsupportedMediaType
from odata_sync.odata.literals import coerce, coerce_collection
from odata_sync.odata.urls import parse_key, parse_segments

_ARRAY_MEMBER = re.compile(r"^(.+)#(\d+)$")


def decode_json(body: bytes, content_type: str | None, *, allow_empty: bool = False) -> dict:
    if not body.strip():
        if allow_empty:
            return {}
        raise BadRequest("The request body is empty")
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in ("application/json", "") and not media.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type '{media}' is not supported; send application/json")
    if not media and not allow_empty:
        raise UnsupportedMediaType("The request has a body but no Content-Type; send application/json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("The request body is not valid UTF-8") from exc
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object")
    return data


def array_members(data: dict, names: frozenset[str]) -> tuple[dict, dict[str, dict[int, object]]]:
    """Split CData's numbered members (``Query#1``, ``User#2``) from the rest: name -> {number: value}."""
    rest: dict = {}
    arrays: dict[str, dict[int, object]] = {}
    lowered = {n.lower(): n for n in names}
    for key, value in data.items():
        match = _ARRAY_MEMBER.match(key)
        if match and match.group(1).lower() in lowered:
            number = int(match.group(2))
            if number < 1:
                raise BadRequest(f"'{key}': numbered members start at 1")
            arrays.setdefault(lowered[match.group(1).lower()], {})[number] = value
        else:
            rest[key] = value
    return rest, arrays


def ordered(numbered: dict[int, object]) -> list:
    """Values of ``Query#1..N`` in number order."""
    return [numbered[n] for n in sorted(numbered)]


def aligned(numbered: dict[int, object], length: int) -> list:
    """Values of ``User#N`` placed at position N-1 (None where a number is missing), for parallel arrays."""
    return [numbered.get(n) for n in range(1, length + 1)]


def _bind(model: Model, es: EntitySet, nav_name: str, value: object, values: dict) -> None:
    """``Job@odata.bind: "Jobs('a')"`` sets the referential-constraint property (JobName)."""
    nav = es.entity_type.navigation(nav_name)
    if nav is None or nav.collection:
        raise NotImplementedYet(f"@odata.bind on '{nav_name}' is not supported")
    if not isinstance(value, str):
        raise BadRequest(f"'{nav_name}@odata.bind' must be an entity URL")
    target = model.target_set(es, nav)
    segment = parse_segments(value.rsplit("/", 1)[-1])[-1]
    if segment.key is None or segment.name.lower() != target.name.lower():
        raise BadRequest(f"'{nav_name}@odata.bind' must address an entity of {target.name}")
    key = parse_key(segment.key)
    remote_type = target.entity_type.key_property.type
    for local, remote in nav.join:
        if remote == target.entity_type.key:
            values[local] = coerce(remote_type, key.text, nav_name)


def entity_values(model: Model, es: EntitySet, data: dict, *, creating: bool,
                  lenient_strings: frozenset[str] = frozenset()) -> dict:
    """Check a body against the entity type: known names, right types and lengths; computed ones dropped.
    ``lenient_strings`` names string properties that also take a JSON number (``"Type": 1``)."""
    et = es.entity_type
    values: dict = {}
    for key, value in data.items():
        if "@" in key:
            name, _, annotation = key.partition("@")
            if not name and annotation in ("odata.type",):
                expected = f"{model.namespace}.{et.name}"
                if not isinstance(value, str) or value.lstrip("#") != expected:
                    raise BadRequest(f"@odata.type must be '#{expected}'")
            elif name and annotation == "odata.bind":
                _bind(model, es, name, value, values)
            elif annotation.startswith("odata.") or not name:
                continue  # control information (@odata.context, @odata.etag, ...) is ignored
            else:
                raise BadRequest(f"Unknown annotation '{key}'")
            continue
        prop = et.prop(key)
        if prop is None:
            if et.navigation(key) is not None:
                raise NotImplementedYet(f"Deep insert or update of '{key}' is not supported")
            raise BadRequest(f"Property '{key}' is not defined on '{model.namespace}.{et.name}'", target=key)
        if prop.computed:
            continue
        if prop.name in lenient_strings and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if prop.collection:
            values[prop.name] = None if value is None else coerce_collection(prop.type, value, prop.name)
        else:
            values[prop.name] = coerce(prop.type, value, prop.name)
            if prop.max_length and isinstance(values[prop.name], str) and len(values[prop.name]) > prop.max_length:
                raise BadRequest(f"'{prop.name}' is longer than {prop.max_length} characters", target=prop.name)
        if values[prop.name] is None:
            if prop.default is not None:
                values[prop.name] = prop.default  # python-odata posts nulls for everything it does not set
            elif not prop.nullable and not creating:
                raise BadRequest(f"Property '{prop.name}' cannot be null", target=prop.name)
    return values


def apply_defaults(es: EntitySet, values: dict) -> None:
    """Fill defaults and enforce required properties for a create."""
    for prop in es.entity_type.properties.values():
        if prop.computed:
            if prop.default is not None:
                values[prop.name] = prop.default
            continue
        if values.get(prop.name) is None:
            if prop.default is not None:
                values[prop.name] = prop.default
            elif prop.collection and not prop.nullable:
                values[prop.name] = []
            elif not prop.nullable:
                raise BadRequest(f"Property '{prop.name}' is required", target=prop.name)
