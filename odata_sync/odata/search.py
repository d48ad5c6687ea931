"""``$search``: words and "phrases" with AND / OR / NOT, matched case-insensitively against string properties."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from odata_sync.errors import BadRequest

MAX_TERMS = 32
_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


@dataclass(frozen=True)
class Term:
    op: str  # "word", "and", "or", "not"
    value: str = ""
    children: tuple[Term, ...] = ()


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise BadRequest(f"Invalid $search near '{text[pos:pos + 20]}'", target="$search")
        pos = match.end()
        if match.group(1):
            tokens.append(("(", ""))
        elif match.group(2):
            tokens.append((")", ""))
        elif match.group(3) is not None:
            tokens.append(("word", re.sub(r"\\(.)", r"\1", match.group(3))))
        elif match.group(4) in ("AND", "OR", "NOT"):
            tokens.append((match.group(4).lower(), ""))
        else:
            tokens.append(("word", match.group(4)))
    if len(tokens) > MAX_TERMS * 2:
        raise BadRequest(f"$search has more than {MAX_TERMS} terms", target="$search")
    return tokens


def parse(text: str) -> Term:
    tokens = _tokens(text)
    if not tokens:
        raise BadRequest("$search is empty", target="$search")
    pos = 0

    def peek() -> str | None:
        return tokens[pos][0] if pos < len(tokens) else None

    def primary() -> Term:
        nonlocal pos
        kind = peek()
        if kind == "not":
            pos += 1
            return Term("not", children=(primary(),))
        if kind == "(":
            pos += 1
            inner = disjunction()
            if peek() != ")":
                raise BadRequest("Unbalanced parentheses in $search", target="$search")
            pos += 1
            return inner
        if kind == "word":
            pos += 1
            return Term("word", tokens[pos - 1][1])
        raise BadRequest("Invalid $search expression", target="$search")

    def conjunction() -> Term:
        nonlocal pos
        terms = [primary()]
        while peek() in ("and", "word", "not", "("):
            if peek() == "and":
                pos += 1
            terms.append(primary())
        return terms[0] if len(terms) == 1 else Term("and", children=tuple(terms))

    def disjunction() -> Term:
        nonlocal pos
        terms = [conjunction()]
        while peek() == "or":
            pos += 1
            terms.append(conjunction())
        return terms[0] if len(terms) == 1 else Term("or", children=tuple(terms))

    result = disjunction()
    if pos != len(tokens):
        raise BadRequest("Invalid $search expression", target="$search")
    return result


def compile_search(term: Term, columns: list[sa.ColumnElement]) -> sa.ColumnElement:
    if term.op == "word":
        needle = term.value.lower()
        matches = (sa.func.lower(sa.func.coalesce(c, "")).contains(needle, autoescape=True) for c in columns)
        return sa.or_(*matches) if columns else sa.false()
    if term.op == "not":
        return sa.not_(compile_search(term.children[0], columns))
    parts = [compile_search(child, columns) for child in term.children]
    return sa.and_(*parts) if term.op == "and" else sa.or_(*parts)
