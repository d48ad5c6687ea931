"""System query options parsed and checked against the EDM: $select, $expand (nested), $orderby, $top, $skip,
$count, $search, $filter (parsed lazily by the compiler), and the options this server answers with 501."""

from __future__ import annotations

from dataclasses import dataclass, field

from odata_sync.edm.model import EntitySet, Model
from odata_sync.errors import BadRequest, NotImplementedYet
from odata_sync.odata import search
from odata_sync.odata.filter import parse_expression

MAX_EXPAND_DEPTH = 5
MAX_INT64 = 2**63 - 1


@dataclass
class OrderItem:
    expression: str
    descending: bool


@dataclass
class QueryOptions:
    entity_set: EntitySet
    select: list[str] | None = None  # declared property names; None = all
    expand: dict[str, QueryOptions] = field(default_factory=dict)  # navigation name -> nested options
    expand_refs: set[str] = field(default_factory=set)
    filter: str | None = None
    orderby: list[OrderItem] = field(default_factory=list)
    top: int | None = None
    skip: int | None = None
    count: bool = False
    search: search.Term | None = None
    skiptoken: str | None = None


def visible_properties(es: EntitySet, options: QueryOptions) -> list[str]:
    """Properties a payload shows, in declaration order: the selection, never write-only ones."""
    names = [p.name for p in es.entity_type.properties.values() if not p.write_only]
    if options.select is not None:
        names = [n for n in names if n in options.select]
    return names


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside parentheses and single-quoted strings."""
    parts, current, depth, quoted = [], [], 0, False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth < 0:
                raise BadRequest(f"Unbalanced parentheses in '{text}'")
        if ch == separator and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0 or quoted:
        raise BadRequest(f"Unbalanced parentheses or quotes in '{text}'")
    parts.append("".join(current))
    return parts


def parse_int(name: str, text: str) -> int:
    value = text.strip()
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, got '{text}'", target=name)
    number = int(value)
    if number > MAX_INT64:
        raise BadRequest(f"{name} is too large", target=name)
    return number


def parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, got '{text}'", target=name)
    return value == "true"


def _select(es: EntitySet, text: str) -> list[str] | None:
    names: list[str] = []
    for raw in split_top_level(text, ","):
        item = raw.strip()
        if item == "*":
            return None
        if not item:
            raise BadRequest("Empty item in $select", target="$select")
        if "/" in item or "(" in item:
            raise NotImplementedYet(f"$select path '{item}' is not supported", target="$select")
        et = es.entity_type
        canonical = et.canonical(item)
        if canonical is None:
            if item.startswith(("CData.", "cdata.")):
                continue  # an action name: nothing to select
            raise BadRequest(f"Property '{item}' is not defined on 'CData.{et.name}'", target="$select")
        prop = et.properties.get(canonical)
        if prop is not None and prop.write_only:
            raise BadRequest(f"Property '{canonical}' cannot be selected", target="$select")
        if canonical not in names:
            names.append(canonical)
    return names


def _orderby(text: str) -> list[OrderItem]:
    items = []
    for raw in split_top_level(text, ","):
        item = raw.strip()
        if not item:
            raise BadRequest("Empty item in $orderby", target="$orderby")
        descending = False
        lowered = item.lower()
        for suffix, desc in ((" desc", True), (" asc", False)):
            if lowered.endswith(suffix):
                item, descending = item[: -len(suffix)].strip(), desc
                break
        parse_expression(item, "$orderby")
        items.append(OrderItem(item, descending))
    return items


def _expand(model: Model, es: EntitySet, text: str, depth: int) -> tuple[dict[str, QueryOptions], set[str]]:
    if depth > MAX_EXPAND_DEPTH:
        raise BadRequest(f"$expand is nested more than {MAX_EXPAND_DEPTH} levels deep", target="$expand")
    expanded: dict[str, QueryOptions] = {}
    refs: set[str] = set()
    for raw in split_top_level(text, ","):
        item = raw.strip()
        if not item:
            raise BadRequest("Empty item in $expand", target="$expand")
        nested = ""
        if item.endswith(")"):
            open_at = item.index("(")
            item, nested = item[:open_at].strip(), item[open_at + 1:-1]
        if item in ("*", "*/$ref"):
            if nested:
                raise NotImplementedYet("Options on $expand=* are not supported", target="$expand")
            for nav in es.entity_type.navigations:
                expanded[nav] = QueryOptions(model.target_set(es, es.entity_type.navigations[nav]))
            continue
        is_ref = item.lower().endswith("/$ref")
        if is_ref:
            item = item[: -len("/$ref")]
        if "/" in item:
            raise NotImplementedYet(f"$expand path '{item}' is not supported", target="$expand")
        nav = es.entity_type.navigation(item)
        if nav is None:
            if es.entity_type.prop(item) is not None:
                raise BadRequest(f"'{item}' is not a navigation property and cannot be expanded", target="$expand")
            raise BadRequest(f"Navigation property '{item}' is not defined on 'CData.{es.entity_type.name}'",
                             target="$expand")
        target = model.target_set(es, nav)
        options = parse_options(model, target, _nested_options(nested), depth) if nested else QueryOptions(target)
        expanded[nav.name] = options
        if is_ref:
            refs.add(nav.name)
    return expanded, refs


def _nested_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for raw in split_top_level(text, ";"):
        if not raw.strip():
            continue
        name, sep, value = raw.partition("=")
        name = name.strip().lower()
        if not sep or not name.startswith("$"):
            raise BadRequest(f"Malformed nested $expand option '{raw}'", target="$expand")
        if name in options:
            raise BadRequest(f"Nested option '{name}' appears more than once", target="$expand")
        options[name] = value
    return options


def parse_options(model: Model, es: EntitySet, raw: dict[str, str], depth: int = 0) -> QueryOptions:
    for unsupported in ("$apply", "$compute", "$levels", "$schemaversion", "$deltatoken", "$index"):
        if unsupported in raw:
            raise NotImplementedYet(f"{unsupported} is not supported", target=unsupported)
    for alias in raw:
        if alias.startswith("@"):
            raise NotImplementedYet("Parameter aliases are not supported", target=alias)
    known = {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "$search", "$format",
             "$skiptoken", "$id"}
    for name in raw:
        if name not in known:
            raise BadRequest(f"Unknown query option '{name}'", target=name)
    options = QueryOptions(es)
    if "$select" in raw:
        options.select = _select(es, raw["$select"])
    if "$expand" in raw:
        options.expand, options.expand_refs = _expand(model, es, raw["$expand"], depth + 1)
    if "$filter" in raw:
        parse_expression(raw["$filter"])  # syntax errors surface now, before any query runs
        options.filter = raw["$filter"]
    if "$orderby" in raw:
        options.orderby = _orderby(raw["$orderby"])
    if "$top" in raw:
        options.top = parse_int("$top", raw["$top"])
    if "$skip" in raw:
        options.skip = parse_int("$skip", raw["$skip"])
    if "$count" in raw:
        options.count = parse_bool("$count", raw["$count"])
    if "$search" in raw:
        options.search = search.parse(raw["$search"])
    if "$skiptoken" in raw:
        options.skiptoken = raw["$skiptoken"]
    return options
