"""Translate a simple SELECT (and structured filters) into OData query options, so the feed does the filtering.

Supported: ``SELECT [TOP n] * | col, ... FROM set [WHERE cond] [ORDER BY col [ASC|DESC], ...] [LIMIT n]`` where a
condition compares a column with a literal (``= <> != < <= > >=``), tests ``IS [NOT] NULL``, and combines with
``AND``/``OR``/``NOT`` and parentheses. Anything else is a BadRequest naming what could not be pushed down: silently
reading everything and filtering nothing would replicate the wrong rows.
"""

from __future__ import annotations

import decimal
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from odata_sync.errors import BadRequest

from . import values
from .types import BOOLEAN, DATE, TIME, TIMESTAMPTZ

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<bracket>\[[^\]]+\])
    | (?P<quoted>"(?:[^"]|"")+")
    | (?P<backtick>`(?:[^`]|``)+`)
    | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|,|\*|\.)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    )""", re.VERBOSE)
_OPS = {"=": "eq", "<>": "ne", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "ORDER", "BY", "ASC", "DESC",
             "LIMIT", "TOP"}


@dataclass
class ODataQuery:
    entity_set: str
    select: list[str] | None = None
    filter: str | None = None
    orderby: list[str] = field(default_factory=list)
    top: int | None = None


@dataclass
class _Token:
    kind: str
    text: str


def _tokens(sql: str) -> list[_Token]:
    tokens, pos = [], 0
    sql = sql.strip().rstrip(";")
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        if not match or match.end() == pos:
            raise BadRequest(f"OData sources: cannot read the query near '{sql[pos:pos + 20].strip()}'")
        pos = match.end()
        kind = match.lastgroup or ""
        text = match.group(kind)
        if kind == "bracket":
            kind, text = "ident", text[1:-1]
        elif kind in ("quoted", "backtick"):
            kind, text = "ident", text[1:-1].replace(text[0] * 2, text[0])
        elif kind == "word" and text.upper() in _KEYWORDS:
            kind, text = "keyword", text.upper()
        elif kind == "word":
            kind = "ident"
        tokens.append(_Token(kind, text))
    return tokens


def literal(value: Any, edm_type: str) -> str:
    """An OData literal for a Python value compared with a property of ``edm_type``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    name = edm_type.removeprefix("Edm.")
    try:
        if name == "DateTimeOffset":
            moment = values.coercer(TIMESTAMPTZ)(value)
            return moment.isoformat().replace("+00:00", "Z")
        if name == "Date":
            return values.coercer(DATE)(value).isoformat()
        if name == "TimeOfDay":
            return values.coercer(TIME)(value).isoformat()
        if name == "Guid":
            return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        if name in ("Int16", "Int32", "Int64", "Byte", "SByte", "Decimal", "Double", "Single"):
            number = value if isinstance(value, int | float | decimal.Decimal) else decimal.Decimal(str(value))
            return format(number, "f") if isinstance(number, decimal.Decimal) else repr(number)
        if name == "Boolean":
            return "true" if values.coercer(BOOLEAN)(value) else "false"
    except (ValueError, ArithmeticError, BadRequest) as exc:
        raise BadRequest(f"OData sources: {value!r} is not a valid {edm_type} literal") from exc
    text = value if isinstance(value, str) else values.to_text(value)
    return "'" + text.replace("'", "''") + "'"


class _Parser:
    def __init__(self, tokens: list[_Token], resolve: Callable[[str, str], tuple[str, str]]) -> None:
        self.tokens, self.pos, self.resolve = tokens, 0, resolve
        self.entity_set = ""

    def peek(self, text: str | None = None, kind: str | None = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        token = self.tokens[self.pos]
        return (text is None or token.text == text) and (kind is None or token.kind == kind)

    def take(self, text: str | None = None, kind: str | None = None) -> _Token:
        if not self.peek(text, kind):
            found = self.tokens[self.pos].text if self.pos < len(self.tokens) else "the end"
            raise BadRequest(f"OData sources: expected {text or kind} but found '{found}' in the query")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def integer(self) -> int:
        token = self.take(kind="number")
        if not token.text.isdigit():
            raise BadRequest("OData sources: TOP/LIMIT needs a whole number")
        return int(token.text)

    def name(self) -> str:
        parts = [self.take(kind="ident").text]
        while self.peek("."):
            self.take(".")
            parts.append(self.take(kind="ident").text)
        return parts[-1]  # a qualifying schema or alias is ignored: entity sets are not schema-qualified

    def query(self) -> ODataQuery:
        self.take("SELECT")
        top = None
        if self.peek("TOP"):
            self.take("TOP")
            top = self.integer()
        columns: list[str] | None = []
        if self.peek("*"):
            self.take("*")
            columns = None
        else:
            raw = [self.name()]
            while self.peek(","):
                self.take(",")
                raw.append(self.name())
        self.take("FROM")
        self.entity_set = self.resolve_set(self.name())
        if columns is not None:
            columns = [self.resolve(self.entity_set, c)[0] for c in raw]
        result = ODataQuery(self.entity_set, columns, top=top)
        if self.peek("WHERE"):
            self.take("WHERE")
            result.filter = self.or_expr()
        if self.peek("ORDER"):
            self.take("ORDER")
            self.take("BY")
            while True:
                column = self.resolve(self.entity_set, self.name())[0]
                direction = ""
                if self.peek("ASC") or self.peek("DESC"):
                    direction = " desc" if self.take(kind="keyword").text == "DESC" else ""
                result.orderby.append(column + direction)
                if not self.peek(","):
                    break
                self.take(",")
        if self.peek("LIMIT"):
            self.take("LIMIT")
            result.top = self.integer()
        if self.pos < len(self.tokens):
            raise BadRequest(f"OData sources: cannot push down '{self.tokens[self.pos].text}' and what follows")
        return result

    def resolve_set(self, name: str) -> str:
        return self.resolve("", name)[0]

    def or_expr(self) -> str:
        parts = [self.and_expr()]
        while self.peek("OR"):
            self.take("OR")
            parts.append(self.and_expr())
        return " or ".join(parts) if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def and_expr(self) -> str:
        parts = [self.not_expr()]
        while self.peek("AND"):
            self.take("AND")
            parts.append(self.not_expr())
        return " and ".join(parts)

    def not_expr(self) -> str:
        if self.peek("NOT"):
            self.take("NOT")
            return f"not ({self.not_expr()})"
        if self.peek("("):
            self.take("(")
            inner = self.or_expr()
            self.take(")")
            return f"({inner})"
        return self.comparison()

    def value(self) -> tuple[str, Any]:
        token = self.tokens[self.pos] if self.pos < len(self.tokens) else None
        if token is None:
            raise BadRequest("OData sources: the query ends inside a condition")
        if token.kind == "string":
            self.pos += 1
            return "literal", token.text[1:-1].replace("''", "'")
        if token.kind == "number":
            self.pos += 1
            text = token.text
            return "literal", int(text) if re.fullmatch(r"[+-]?\d+", text) else decimal.Decimal(text)
        if token.kind == "keyword" and token.text in ("TRUE", "FALSE", "NULL"):
            self.pos += 1
            return "literal", {"TRUE": True, "FALSE": False, "NULL": None}[token.text]
        return "column", self.name()

    def comparison(self) -> str:
        left_kind, left = self.value()
        if self.peek("IS"):
            self.take("IS")
            negate = self.peek("NOT")
            if negate:
                self.take("NOT")
            self.take("NULL")
            if left_kind != "column":
                raise BadRequest("OData sources: IS NULL needs a column")
            column = self.resolve(self.entity_set, left)[0]
            return f"{column} {'ne' if negate else 'eq'} null"
        token = self.take(kind="op")
        if token.text not in _OPS:
            raise BadRequest(f"OData sources: cannot push down the operator '{token.text}'")
        op = _OPS[token.text]
        right_kind, right = self.value()
        if left_kind == right_kind:
            raise BadRequest("OData sources: a condition must compare a column with a literal")
        if left_kind == "literal":
            left, right, op = right, left, _FLIP[op]
        column, edm_type = self.resolve(self.entity_set, left)
        return f"{column} {op} {literal(right, edm_type)}"


def parse_select(sql: str, resolve: Callable[[str, str], tuple[str, str]]) -> ODataQuery:
    """Parse a SELECT; ``resolve(entity_set, name)`` returns ``(exact name, Edm type)`` or raises BadRequest.

    ``resolve('', name)`` resolves an entity-set name.
    """
    return _Parser(_tokens(sql), resolve).query()


def filter_for(conditions: list[tuple[str, str, Any]], resolve: Callable[[str], tuple[str, str]]) -> str | None:
    """Structured ``(column, op, value)`` conditions as one ``$filter`` expression (joined with ``and``)."""
    parts = []
    for column, op, value in conditions:
        name, edm_type = resolve(column)
        op = op.strip()
        if op not in _OPS:
            raise BadRequest(f"unsupported filter operator '{op}'")
        parts.append(f"{name} {_OPS[op]} {literal(value, edm_type)}")
    return " and ".join(parts) or None

