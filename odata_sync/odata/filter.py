"""``$filter`` (and ``$orderby`` expressions): odata-query parses, this module compiles the AST to SQLAlchemy Core.

Compiling ourselves (rather than with odata-query's own visitor) lets us resolve names case-insensitively
against the EDM, coerce literals to the compared property's type (``TaskId eq '123'``), translate ``any``/``all``
on collection navigation to ``EXISTS`` subqueries, and answer 501 for valid OData we do not support.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from odata_query import ast
from odata_query import exceptions as oq_exc
from odata_query.grammar import ODATA_FUNCTIONS, ODataLexer, ODataParser

from odata_sync.edm.model import EntitySet, EntityType, Model
from odata_sync.errors import BadRequest, NotImplementedYet
from odata_sync.odata.literals import check_int64, coerce, parse_datetime
from odata_sync.store.types import UTCDateTime

MAX_LENGTH = 16_384
MAX_NODES = 1_000
MAX_DEPTH = 64

COUNT_FUNCTION = "odatasync_count"
# ``Tasks/$count`` is valid OData the grammar lacks: it is rewritten to a private function the compiler knows.
ODATA_FUNCTIONS.setdefault(COUNT_FUNCTION, 1)
_COUNT_SEGMENT = re.compile(r"([A-Za-z_][\w/]*)/\$count\b")
_lexer = ODataLexer()
_parser = ODataParser()
_SPACED_OFFSET = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:\d\d)")
_NUMERIC = {"Edm.Int32", "Edm.Int64", "Edm.Double", "Edm.Decimal"}
_UNSUPPORTED_FUNCS = {"geo.distance", "geo.length", "geo.intersects", "hassubset", "hassubsequence", "totalseconds",
                      "cast", "isof"}


def _check_shape(node: ast._Node) -> None:
    """Reject expressions too large or too deep to compile safely (iteratively: no recursion on hostile input)."""
    stack, count = [(node, 1)], 0
    while stack:
        current, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise BadRequest(f"The expression has more than {MAX_NODES} terms")
        if depth > MAX_DEPTH:
            raise BadRequest(f"The expression is nested more than {MAX_DEPTH} levels deep")
        for value in vars(current).values():
            children = value if isinstance(value, list) else [value]
            stack.extend((c, depth + 1) for c in children if isinstance(c, ast._Node))


def _single_item_lists(tokens: Iterator[Any]) -> Iterator[Any]:
    """``x in ('a')``: OData's one-item list, which the grammar only takes as ``('a',)`` (it would collide with a
    parenthesised expression elsewhere): after ``in``, a parenthesised group without a top-level comma gets one."""
    tokens = iter(tokens)
    for token in tokens:
        yield token
        if token.type != "IN":
            continue
        group: list[Any] = []
        for following in tokens:
            group.append(following)
            if following.type != "WS":
                break
        if not group or group[-1].type != "(":
            yield from group
            continue
        depth, comma = 1, False
        for following in tokens:
            if following.type == "(":
                depth += 1
            elif following.type == ")":
                depth -= 1
                if depth == 0:
                    if not comma:
                        extra = copy.copy(following)
                        extra.type = extra.value = ","
                        group.append(extra)
                    group.append(following)
                    break
            elif following.type == "," and depth == 1:
                comma = True
            group.append(following)
        yield from group


@lru_cache(maxsize=512)
def parse_expression(text: str, what: str = "$filter") -> ast._Node:
    if len(text) > MAX_LENGTH:
        raise BadRequest(f"{what} is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise BadRequest(f"{what} is empty")
    source = _SPACED_OFFSET.sub(r"\1+\2", text.strip())
    source = _COUNT_SEGMENT.sub(rf"{COUNT_FUNCTION}(\1)", source)
    try:
        tree = _parser.parse(_single_item_lists(_lexer.tokenize(source)))
    except oq_exc.TokenizingException as exc:
        position = getattr(exc.token, "index", None)
        raise BadRequest(f"Syntax error in {what} at position {position}: unexpected '{source[position:position + 20]}'",
                         target=what) from exc
    except oq_exc.ParsingException as exc:
        if exc.eof or exc.token is None:
            raise BadRequest(f"Syntax error in {what}: the expression ends too early", target=what) from exc
        position = getattr(exc.token, "index", None)
        raise BadRequest(f"Syntax error in {what} at position {position}: unexpected '{exc.token.value}'",
                         target=what) from exc
    except oq_exc.UnknownFunctionException as exc:
        if exc.function_name.lower() in _UNSUPPORTED_FUNCS:
            raise NotImplementedYet(f"The function '{exc.function_name}' is not supported", target=what) from exc
        raise BadRequest(f"Unknown function '{exc.function_name}' in {what}", target=what) from exc
    except oq_exc.ArgumentCountException as exc:
        raise BadRequest(f"Wrong number of arguments in {what}: {exc}", target=what) from exc
    except oq_exc.ODataException as exc:
        raise BadRequest(f"Invalid {what}: {exc}", target=what) from exc
    except RecursionError as exc:
        raise BadRequest(f"{what} is nested too deeply", target=what) from exc
    if tree is None:
        raise BadRequest(f"{what} is empty", target=what)
    _check_shape(tree)
    return tree


@dataclass
class Typed:
    """A compiled operand and its EDM type (None for untyped literals until coerced)."""

    expr: sa.ColumnElement | None
    edm: str | None
    literal: object = None
    is_literal: bool = False
    is_null: bool = False


@dataclass
class Scope:
    table: sa.FromClause
    entity_type: EntityType
    entity_set: EntitySet


class FilterCompiler:
    """Compiles one expression tree against one entity set's table; lambda variables open nested scopes."""

    def __init__(self, model: Model, entity_set: EntitySet, table: sa.FromClause, table_for_set,
                 dialect: str, hidden: frozenset[str] = frozenset(), what: str = "$filter") -> None:
        self.model = model
        self.root = Scope(table, entity_set.entity_type, entity_set)
        self.table_for_set = table_for_set
        self.dialect = dialect
        self.hidden = hidden
        self.what = what
        self.variables: dict[str, Scope] = {}

    # ---- entry points -------------------------------------------------------------------------------------
    def boolean(self, node: ast._Node) -> sa.ColumnElement:
        typed = self.visit(node)
        if typed.is_literal:
            if isinstance(typed.literal, bool):
                return sa.true() if typed.literal else sa.false()
            raise BadRequest(f"{self.what} must be a boolean expression", target=self.what)
        if typed.edm not in (None, "Edm.Boolean"):
            raise BadRequest(f"{self.what} must be a boolean expression, not {typed.edm}", target=self.what)
        return typed.expr

    def value(self, node: ast._Node) -> Typed:
        typed = self.visit(node)
        if typed.is_literal:
            return Typed(sa.literal(typed.literal), typed.edm, typed.literal, True)
        return typed

    # ---- dispatch ---------------------------------------------------------------------------------------------
    def visit(self, node: ast._Node) -> Typed:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise NotImplementedYet(f"{type(node).__name__} expressions are not supported in {self.what}")
        return method(node)

    # literals
    def _lit(self, value: object, edm: str | None) -> Typed:
        return Typed(None, edm, value, True)

    def visit_Null(self, node):
        return Typed(sa.null(), None, None, True, True)

    def visit_Integer(self, node):
        return self._lit(check_int64(int(node.val), self.what), "Edm.Int64")

    def visit_Float(self, node):
        return self._lit(Decimal(node.val), "Edm.Decimal")

    def visit_Boolean(self, node):
        return self._lit(node.val.lower() == "true", "Edm.Boolean")

    def visit_String(self, node):
        if "\x00" in node.val:
            raise BadRequest(f"A string literal in {self.what} contains a NUL character", target=self.what)
        return self._lit(node.val, "Edm.String")

    def visit_GUID(self, node):
        return self._lit(node.val.lower(), "Edm.Guid")

    def visit_Date(self, node):
        try:
            return self._lit(dt.date.fromisoformat(node.val), "Edm.Date")
        except ValueError as exc:
            raise BadRequest(f"Invalid date literal '{node.val}'", target=self.what) from exc

    def visit_DateTime(self, node):
        try:
            return self._lit(parse_datetime(node.val), "Edm.DateTimeOffset")
        except ValueError as exc:
            raise BadRequest(f"Invalid date/time literal '{node.val}'", target=self.what) from exc

    def visit_Time(self, node):
        try:
            return self._lit(dt.time.fromisoformat(node.val), "Edm.TimeOfDay")
        except ValueError as exc:
            raise BadRequest(f"Invalid time literal '{node.val}'", target=self.what) from exc

    def visit_Duration(self, node):
        raise NotImplementedYet("Duration literals are not supported", target=self.what)

    def visit_Geography(self, node):
        raise NotImplementedYet("Geography literals are not supported", target=self.what)

    def visit_List(self, node):
        raise BadRequest("A list literal may only appear on the right of 'in'", target=self.what)

    # names and paths
    def _property(self, scope: Scope, name: str) -> Typed:
        prop = scope.entity_type.prop(name)
        if prop is None:
            if scope.entity_type.navigation(name) is not None:
                raise BadRequest(f"Navigation property '{name}' needs any/all or a property path in {self.what}",
                                 target=self.what)
            raise BadRequest(f"Property '{name}' is not defined on '{self.model.namespace}.{scope.entity_type.name}'",
                             target=self.what)
        if prop.write_only or prop.name in self.hidden:
            raise BadRequest(f"Property '{prop.name}' cannot be used in {self.what}", target=self.what)
        if prop.collection:
            raise NotImplementedYet(f"Collection property '{prop.name}' cannot be used in {self.what}")
        return Typed(scope.table.c[prop.name], prop.type)

    def visit_Identifier(self, node):
        if node.namespace:
            raise BadRequest(f"Unknown name '{node.full_name()}' in {self.what}", target=self.what)
        if node.name == "$it":
            raise NotImplementedYet("$it is not supported", target=self.what)
        if node.name in self.variables:
            raise BadRequest(f"Lambda variable '{node.name}' must be followed by a property path", target=self.what)
        return self._property(self.root, node.name)

    def _path(self, node: ast._Node) -> list[str]:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.owner
        if not isinstance(node, ast.Identifier) or node.namespace:
            raise BadRequest(f"Unsupported path in {self.what}", target=self.what)
        parts.append(node.name)
        return parts[::-1]

    def _walk(self, parts: list[str]) -> tuple[Scope, list[tuple[Scope, Scope, object]], str]:
        """Resolve a path: a starting scope, the single-valued hops taken, and the final name."""
        first, rest = parts[0], parts[1:]
        scope = self.variables.get(first)
        if scope is None:
            scope, rest = self.root, parts
        hops = []
        for name in rest[:-1]:
            nav = scope.entity_type.navigation(name)
            if nav is None:
                raise BadRequest(f"'{name}' is not a navigation property of "
                                 f"'{self.model.namespace}.{scope.entity_type.name}'", target=self.what)
            if nav.collection:
                raise BadRequest(f"Collection navigation '{nav.name}' needs any/all in {self.what}", target=self.what)
            target_set = self.model.target_set(scope.entity_set, nav)
            target = Scope(self.table_for_set(target_set.name).alias(), target_set.entity_type, target_set)
            hops.append((scope, target, nav))
            scope = target
        return scope, hops, rest[-1] if rest else first

    def visit_Attribute(self, node):
        parts = self._path(node)
        scope, hops, last = self._walk(parts)
        typed = self._property(scope, last)
        if not hops:
            return typed
        # Walk back from the last hop, wrapping the value in correlated scalar subqueries.
        expr = typed.expr
        for source, target, nav in reversed(hops):
            join = sa.and_(*(target.table.c[r] == source.table.c[loc] for loc, r in nav.join))
            expr = sa.select(expr).where(join).correlate(source.table).scalar_subquery()
        return Typed(expr, typed.edm)

    # operators
    def _coerce_literal(self, lit: Typed, edm: str | None) -> Typed:
        """Give a literal the type of the other operand, converting values CData clients send as strings."""
        if lit.is_null or edm is None:
            return Typed(sa.literal(lit.literal) if not lit.is_null else sa.null(), lit.edm, lit.literal, True,
                         lit.is_null)
        value = lit.literal
        if edm == "Edm.DateTimeOffset":
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                value = dt.datetime.combine(value, dt.time(), dt.UTC)
            elif isinstance(value, str):
                value = coerce(edm, value, self.what)
            if not isinstance(value, dt.datetime):
                raise BadRequest(f"Cannot compare {lit.edm} with {edm}", target=self.what)
            return Typed(sa.literal(value, UTCDateTime()), edm, value, True)
        if edm in _NUMERIC:
            if isinstance(value, str):
                value = coerce("Edm.Int64" if edm in ("Edm.Int32", "Edm.Int64") else "Edm.Decimal", value, self.what)
            if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
                raise BadRequest(f"Cannot compare {lit.edm} with {edm}", target=self.what)
            return Typed(sa.literal(value), edm, value, True)
        if edm == "Edm.Boolean":
            if isinstance(value, str):
                value = coerce(edm, value, self.what)
            if not isinstance(value, bool):
                raise BadRequest(f"Cannot compare {lit.edm} with {edm}", target=self.what)
            return Typed(sa.literal(value), edm, value, True)
        if edm in ("Edm.String", "Edm.Guid"):
            if not isinstance(value, str):
                raise BadRequest(f"Cannot compare {lit.edm} with {edm}: quote the value", target=self.what)
            return Typed(sa.literal(value, sa.String()), edm, value, True)
        if edm in ("Edm.Date", "Edm.TimeOfDay"):
            text = value.isoformat() if hasattr(value, "isoformat") else str(value)
            return Typed(sa.literal(text, sa.String()), edm, value, True)
        return Typed(sa.literal(value), edm, value, True)

    def _pair(self, left: ast._Node, right: ast._Node) -> tuple[Typed, Typed]:
        a, b = self.visit(left), self.visit(right)
        if a.is_literal and not b.is_literal:
            a = self._coerce_literal(a, b.edm)
        elif b.is_literal and not a.is_literal:
            b = self._coerce_literal(b, a.edm)
        elif a.is_literal and b.is_literal:
            a = self._coerce_literal(a, a.edm)
            b = self._coerce_literal(b, b.edm)
        return a, b

    def visit_Compare(self, node):
        if isinstance(node.comparator, ast.In):
            return self._in(node)
        a, b = self._pair(node.left, node.right)
        op = type(node.comparator)
        if a.is_null or b.is_null:
            other = b if a.is_null else a
            if op is ast.Eq:
                return Typed(sa.true() if a.is_null and b.is_null else other.expr.is_(None), "Edm.Boolean")
            if op is ast.NotEq:
                return Typed(sa.false() if a.is_null and b.is_null else other.expr.is_not(None), "Edm.Boolean")
            return Typed(sa.false(), "Edm.Boolean")
        ops = {ast.Eq: "__eq__", ast.NotEq: "__ne__", ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__",
               ast.GtE: "__ge__"}
        return Typed(getattr(a.expr, ops[op])(b.expr), "Edm.Boolean")

    def _in(self, node):
        left = self.visit(node.left)
        if left.is_literal:
            raise NotImplementedYet("'in' with a literal on the left is not supported", target=self.what)
        items = node.right.val if isinstance(node.right, ast.List) else [node.right]
        values = []
        for item in items:
            typed = self.visit(item)
            if not typed.is_literal:
                raise NotImplementedYet("'in' supports a list of literals", target=self.what)
            values.append(self._coerce_literal(typed, left.edm).literal)
        non_null = [v for v in values if v is not None]
        expr = left.expr.in_(non_null) if non_null else sa.false()
        if len(non_null) != len(values):
            expr = sa.or_(expr, left.expr.is_(None))
        return Typed(expr, "Edm.Boolean")

    def visit_BoolOp(self, node):
        left, right = self.boolean(node.left), self.boolean(node.right)
        return Typed(sa.and_(left, right) if isinstance(node.op, ast.And) else sa.or_(left, right), "Edm.Boolean")

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            return Typed(sa.not_(self.boolean(node.operand)), "Edm.Boolean")
        operand = self.visit(node.operand)
        if operand.is_literal:
            if isinstance(operand.literal, (int, Decimal)) and not isinstance(operand.literal, bool):
                return self._lit(-operand.literal, operand.edm)
            raise BadRequest("Unary minus needs a number", target=self.what)
        self._numeric(operand, "-")
        return Typed(-operand.expr, operand.edm)

    def _numeric(self, typed: Typed, op: str) -> None:
        if typed.edm not in _NUMERIC:
            raise BadRequest(f"Operator '{op}' needs numeric operands, not {typed.edm}", target=self.what)

    def visit_BinOp(self, node):
        a, b = self._pair(node.left, node.right)
        names = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Mod: "mod"}
        name = names[type(node.op)]
        if a.edm == "Edm.DateTimeOffset" or b.edm == "Edm.DateTimeOffset":
            raise NotImplementedYet("Date/time arithmetic is not supported", target=self.what)
        self._numeric(a, name)
        self._numeric(b, name)
        edm = "Edm.Decimal" if "Edm.Decimal" in (a.edm, b.edm) or "Edm.Double" in (a.edm, b.edm) else "Edm.Int64"
        if name == "add":
            expr = a.expr + b.expr
        elif name == "sub":
            expr = a.expr - b.expr
        elif name == "mul":
            expr = a.expr * b.expr
        elif name == "div":
            if b.is_literal and b.literal == 0:
                raise BadRequest("Division by zero", target=self.what)
            expr = a.expr.op("/")(b.expr)  # integer division on integers, as OData's div
        else:
            expr = a.expr.op("%")(b.expr)
        return Typed(expr, edm)

    # functions
    def visit_Call(self, node):
        name = node.func.full_name()
        lname = name.lower()
        if lname in _UNSUPPORTED_FUNCS:
            raise NotImplementedYet(f"The function '{name}' is not supported", target=self.what)
        handler = getattr(self, "fn_" + lname, None)
        if handler is None:
            raise NotImplementedYet(f"The function '{name}' is not supported", target=self.what)
        return handler(*node.args)

    def _text(self, node) -> Typed:
        typed = self.visit(node)
        if typed.is_literal:
            if not isinstance(typed.literal, str):
                raise BadRequest("A string function needs a string argument", target=self.what)
            return Typed(sa.literal(typed.literal, sa.String()), "Edm.String", typed.literal, True)
        if typed.edm not in ("Edm.String", "Edm.Guid"):
            raise BadRequest(f"A string function needs a string argument, not {typed.edm}", target=self.what)
        return typed

    def _like(self, subject, pattern, kind: str) -> Typed:
        s, p = self._text(subject), self._text(pattern)
        if p.is_literal:
            method = {"contains": s.expr.contains, "startswith": s.expr.startswith, "endswith": s.expr.endswith}[kind]
            return Typed(method(p.literal, autoescape=True), "Edm.Boolean")
        position = self._position(s.expr, p.expr)
        if kind == "contains":
            return Typed(position > 0, "Edm.Boolean")
        if kind == "startswith":
            return Typed(position == 1, "Edm.Boolean")
        return Typed(sa.func.substr(s.expr, sa.func.length(s.expr) - sa.func.length(p.expr) + 1) == p.expr,
                     "Edm.Boolean")

    def _position(self, haystack, needle):
        return sa.func.strpos(haystack, needle) if self.dialect == "postgresql" else sa.func.instr(haystack, needle)

    def fn_contains(self, a, b):
        return self._like(a, b, "contains")

    def fn_startswith(self, a, b):
        return self._like(a, b, "startswith")

    def fn_endswith(self, a, b):
        return self._like(a, b, "endswith")

    def fn_length(self, a):
        return Typed(sa.func.length(self._text(a).expr), "Edm.Int32")

    def fn_indexof(self, a, b):
        return Typed(self._position(self._text(a).expr, self._text(b).expr) - 1, "Edm.Int32")

    def fn_substring(self, a, start, length=None):
        s = self._text(a).expr
        begin = self._int_arg(start) + 1
        if length is None:
            return Typed(sa.func.substr(s, begin), "Edm.String")
        return Typed(sa.func.substr(s, begin, self._int_arg(length)), "Edm.String")

    def _int_arg(self, node):
        typed = self.visit(node)
        if typed.is_literal:
            if not isinstance(typed.literal, int) or isinstance(typed.literal, bool):
                raise BadRequest("An integer argument is required", target=self.what)
            if not 0 <= typed.literal <= 2**31 - 2:
                raise BadRequest(f"substring positions and lengths must be between 0 and {2**31 - 2}",
                                 target=self.what)
            return sa.literal(typed.literal)
        if typed.edm not in ("Edm.Int32", "Edm.Int64"):
            raise BadRequest("An integer argument is required", target=self.what)
        return typed.expr

    def fn_tolower(self, a):
        return Typed(sa.func.lower(self._text(a).expr), "Edm.String")

    def fn_toupper(self, a):
        return Typed(sa.func.upper(self._text(a).expr), "Edm.String")

    def fn_trim(self, a):
        return Typed(sa.func.trim(self._text(a).expr), "Edm.String")

    def fn_concat(self, a, b):
        return Typed(self._text(a).expr.concat(self._text(b).expr), "Edm.String")

    def fn_matchespattern(self, a, b):
        pattern = self._text(b)
        if pattern.is_literal:
            try:
                re.compile(pattern.literal)
            except re.error as exc:
                raise BadRequest(f"Invalid pattern in matchesPattern: {exc}", target=self.what) from exc
        return Typed(self._text(a).expr.regexp_match(pattern.expr), "Edm.Boolean")

    def _datetime(self, node) -> sa.ColumnElement:
        typed = self.visit(node)
        if typed.is_literal:
            typed = self._coerce_literal(typed, "Edm.DateTimeOffset")
        elif typed.edm != "Edm.DateTimeOffset":
            raise BadRequest(f"A date/time function needs a DateTimeOffset argument, not {typed.edm}",
                             target=self.what)
        return typed.expr

    def _part(self, node, field: str) -> Typed:
        expr = self._datetime(node)
        if self.dialect == "postgresql":
            value = sa.func.floor(sa.extract(field, sa.func.timezone("UTC", expr)))
        else:
            value = sa.extract(field, expr)
        return Typed(sa.cast(value, sa.Integer), "Edm.Int32")

    def fn_year(self, a):
        return self._part(a, "year")

    def fn_month(self, a):
        return self._part(a, "month")

    def fn_day(self, a):
        return self._part(a, "day")

    def fn_hour(self, a):
        return self._part(a, "hour")

    def fn_minute(self, a):
        return self._part(a, "minute")

    def fn_second(self, a):
        return self._part(a, "second")

    def fn_fractionalseconds(self, a):
        expr = self._datetime(a)
        if self.dialect == "postgresql":
            micro = sa.extract("microseconds", expr)
            return Typed((micro - sa.func.floor(micro / 1_000_000) * 1_000_000) / 1_000_000.0, "Edm.Decimal")
        return Typed(sa.cast(sa.func.strftime("%f", expr), sa.Float) - sa.cast(sa.func.strftime("%S", expr), sa.Float),
                     "Edm.Decimal")

    def fn_date(self, a):
        expr = self._datetime(a)
        if self.dialect == "postgresql":
            return Typed(sa.cast(sa.cast(sa.func.timezone("UTC", expr), sa.Date), sa.String), "Edm.Date")
        return Typed(sa.func.date(expr), "Edm.Date")

    def fn_time(self, a):
        expr = self._datetime(a)
        if self.dialect == "postgresql":
            return Typed(sa.cast(sa.cast(sa.func.timezone("UTC", expr), sa.Time), sa.String), "Edm.TimeOfDay")
        return Typed(sa.func.strftime("%H:%M:%f", expr), "Edm.TimeOfDay")

    def fn_totaloffsetminutes(self, a):
        self._datetime(a)
        return self._lit(0, "Edm.Int32")  # every stored timestamp is UTC

    def fn_now(self):
        return self._lit(dt.datetime.now(dt.UTC), "Edm.DateTimeOffset")

    def fn_mindatetime(self):
        return self._lit(dt.datetime(1, 1, 1, tzinfo=dt.UTC), "Edm.DateTimeOffset")

    def fn_maxdatetime(self):
        return self._lit(dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC), "Edm.DateTimeOffset")

    def _number(self, node) -> Typed:
        typed = self.visit(node)
        if typed.is_literal:
            typed = self._coerce_literal(typed, typed.edm)
        self._numeric(typed, "math function")
        return typed

    def fn_round(self, a):
        typed = self._number(a)
        return Typed(sa.func.round(typed.expr), typed.edm)

    def fn_floor(self, a):
        typed = self._number(a)
        if self.dialect == "postgresql":
            return Typed(sa.func.floor(typed.expr), typed.edm)
        truncated = sa.cast(typed.expr, sa.Integer)
        return Typed(sa.case((typed.expr < truncated, truncated - 1), else_=truncated), typed.edm)

    def fn_ceiling(self, a):
        typed = self._number(a)
        if self.dialect == "postgresql":
            return Typed(sa.func.ceiling(typed.expr), typed.edm)
        truncated = sa.cast(typed.expr, sa.Integer)
        return Typed(sa.case((typed.expr > truncated, truncated + 1), else_=truncated), typed.edm)

    def fn_odatasync_count(self, path):
        """``Tasks/$count``: the number of related entities, as a correlated subquery."""
        child, join = self._collection(path)
        return Typed(sa.select(sa.func.count()).select_from(child.table).where(join).scalar_subquery(), "Edm.Int64")

    def _collection(self, path) -> tuple[Scope, sa.ColumnElement]:
        parts = self._path(path)
        scope, hops, last = self._walk(parts)
        if hops:
            raise NotImplementedYet("A collection after a single-valued navigation path is not supported",
                                    target=self.what)
        nav = scope.entity_type.navigation(last)
        if nav is None or not nav.collection:
            raise BadRequest(f"'{last}' is not a collection navigation property", target=self.what)
        target_set = self.model.target_set(scope.entity_set, nav)
        child = Scope(self.table_for_set(target_set.name).alias(), target_set.entity_type, target_set)
        return child, sa.and_(*(child.table.c[r] == scope.table.c[loc] for loc, r in nav.join))

    # lambdas
    def visit_CollectionLambda(self, node):
        child, join = self._collection(node.owner)
        scope = self.root
        if node.lambda_ is None:
            if isinstance(node.operator, ast.All):
                raise BadRequest("all() needs a lambda expression", target=self.what)
            return Typed(sa.exists(sa.select(sa.literal(1)).select_from(child.table).where(join)), "Edm.Boolean")
        variable = node.lambda_.identifier.name
        if variable in self.variables or scope.entity_type.canonical(variable):
            raise BadRequest(f"Lambda variable '{variable}' shadows another name", target=self.what)
        self.variables[variable] = child
        try:
            condition = self.boolean(node.lambda_.expression)
        finally:
            del self.variables[variable]
        query = sa.select(sa.literal(1)).select_from(child.table)
        if isinstance(node.operator, ast.Any):
            return Typed(sa.exists(query.where(join, condition)), "Edm.Boolean")
        violated = sa.or_(sa.not_(condition), condition.is_(None))
        return Typed(~sa.exists(query.where(join, violated)), "Edm.Boolean")

    def visit_NamedParam(self, node):
        raise NotImplementedYet("Named parameters are not supported", target=self.what)
