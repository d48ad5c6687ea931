"""Resource paths, query strings and key predicates, parsed from the raw request bytes.

Routing on the raw path keeps ``%2F`` inside a key as part of the key; query values are form-decoded
(``+`` is a space, as CData's own client sends), and raw unencoded spaces and quotes are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote, unquote_plus

from odata_sync.errors import BadRequest

SYSTEM_OPTIONS = {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "$search", "$format",
                  "$skiptoken", "$apply", "$compute", "$levels", "$id", "$schemaversion", "$deltatoken", "$index"}


@dataclass
class Segment:
    name: str
    key: str | None = None  # raw text between the parentheses, already percent-decoded


@dataclass
class ParsedUrl:
    segments: list[Segment]
    options: dict[str, str] = field(default_factory=dict)  # lower-cased "$name" -> value
    params: dict[str, str] = field(default_factory=dict)  # custom parameters, lower-cased names
    raw_query: str = ""


def _split_path(path: str) -> list[str]:
    """Split on '/' outside quotes and parentheses (a raw '/' inside a quoted key stays in the key)."""
    parts, current, depth, quoted = [], [], 0, False
    for ch in path:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth = max(0, depth - 1)
        if ch == "/" and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p]


_SEGMENT = re.compile(r"^([^()]+)\((.*)\)$", re.S)


def parse_segments(raw_path: str) -> list[Segment]:
    segments = []
    for raw in _split_path(raw_path):
        match = _SEGMENT.match(raw)
        if match:
            segments.append(Segment(unquote(match.group(1)), unquote(match.group(2))))
        elif "(" in raw or ")" in raw:
            raise BadRequest(f"Malformed path segment '{unquote(raw)}': unbalanced parentheses")
        else:
            segments.append(Segment(unquote(raw)))
    return segments


def parse_query(raw_query: str) -> tuple[dict[str, str], dict[str, str]]:
    options: dict[str, str] = {}
    params: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            name = unquote_plus(name, errors="strict").strip()
            value = unquote_plus(value, errors="strict")
        except UnicodeDecodeError as exc:
            raise BadRequest("The query string is not valid UTF-8") from exc
        lower = name.lower()
        if lower.startswith("$"):
            if lower not in SYSTEM_OPTIONS:
                raise BadRequest(f"Unknown system query option '{name}'")
            if lower in options:
                raise BadRequest(f"System query option '{name}' appears more than once")
            options[lower] = value
        else:
            params[lower] = value
    return options, params


@lru_cache(maxsize=1024)
def parse_url(raw_path_and_query: str, root: str) -> ParsedUrl:
    """``raw_path_and_query`` is the request target as received; ``root`` the service root path (``/api.rsc``).
    Cached: clients repeat URLs (polling, paging through the same query), and callers treat the result as read-only.
    """
    path, _, query = raw_path_and_query.partition("?")
    path = re.sub(r"/{2,}", "/", path)
    if not path.lower().startswith(root.lower()):
        raise BadRequest("Not under the service root")
    segments = parse_segments(path[len(root):])
    options, params = parse_query(query)
    return ParsedUrl(segments, options, params, query)


@dataclass
class KeyValue:
    """One key predicate: the literal text and whether it was a quoted string."""

    text: str
    quoted: bool
    name: str | None = None  # set for the named form Key='v'


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a single-quoted OData string starting at ``start`` (a quote); return the value and the end index."""
    out, i = [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise BadRequest(f"Unterminated string literal in key predicate ({text})")


def parse_key(text: str) -> KeyValue:
    """Parse ``'a'``, ``Name='a'``, ``123`` or CData's unquoted ``My Job`` into one key value."""
    stripped = text.strip()
    if not stripped:
        raise BadRequest("Empty key predicate")
    name = None
    if not stripped.startswith("'"):
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", stripped, re.S)
        if match:
            name, stripped = match.group(1), match.group(2).strip()
    if stripped.startswith("'"):
        value, end = _read_quoted(stripped, 0)
        rest = stripped[end:].strip()
        if rest:
            raise BadRequest(f"Key predicate ({text}) has more than one value; this key has one part")
        return KeyValue(value, True, name)
    if "'" in stripped:
        raise BadRequest(f"Malformed key predicate ({text})")
    if "," in stripped or (name is not None and "=" in stripped):
        raise BadRequest(f"Key predicate ({text}) has more than one value; this key has one part")
    return KeyValue(stripped, False, name)
