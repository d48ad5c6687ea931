"""The REPLICATE statement of a task, parsed without touching any database.

    REPLICATE name
        [ ( column type [NOT NULL] [PRIMARY KEY], ..., [PRIMARY KEY (column, ...)] ) ]
        [ WITH option[=value], ... ]
        [ select-statement ]
        [ WITH option[=value], ... ] [;]

``name`` has one to three parts (``[catalog].[schema].[table]``), each bracketed (``]]`` escapes ``]``), double-quoted
(``""`` escapes ``"``), back-quoted or bare. Without a SELECT the source is the table ``name``; with one, ``name`` is
the destination and the SELECT is kept as text to run in the source's own dialect. Keywords are case-insensitive; a
``WITH`` in front of a SELECT that does not name a replication option starts a common table expression.

``parse_replicate`` is pure and fast (the service calls it whenever a Task is written); a malformed statement raises
``BadRequest`` naming the 1-based character position and what was expected there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

from odata_sync.errors import BadRequest

from .options import OPTIONS, Options, is_boolean, option_name

_BARE = re.compile(r"[^\W\d][\w$#@]*")
_WORD = re.compile(r"[^\W\d]\w*")
_CONSTRAINT = re.compile(r"\s+(NOT\s+NULL|NULL|PRIMARY\s+KEY)\s*$", re.IGNORECASE)
_CLOSING = {"[": "]", '"': '"', "`": "`"}
#: The spelling used when writing options back out: the first name of each field in OPTIONS.
_SPELLING = {fld: name for name, (fld, _parse) in reversed(OPTIONS.items())}


@dataclass(frozen=True)
class TableName:
    """A one- to three-part name, unquoted: ``parts[-1]`` is the table, ``parts[-2]`` the schema if any."""

    parts: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def schema(self) -> str | None:
        return self.parts[-2] if len(self.parts) > 1 else None

    def __str__(self) -> str:
        return ".".join(bracket(part) for part in self.parts)


@dataclass(frozen=True)
class ColumnDefinition:
    """A destination column declared in the statement; ``type`` is the SQL type as written (``VARCHAR(50)``)."""

    name: str
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class ReplicateStatement:
    target: TableName
    select: str | None = None
    columns: tuple[ColumnDefinition, ...] = ()
    primary_key: tuple[str, ...] = ()
    options: Options = field(default_factory=Options)

    @property
    def source_table(self) -> TableName | None:
        """The source table of ``REPLICATE [T]`` (None when the source is a SELECT)."""
        return self.target if self.select is None else None

    def to_text(self) -> str:
        """The statement written back in canonical form (``parse_replicate(s.to_text()) == s``)."""
        text = f"REPLICATE {self.target}"
        items = [f"{bracket(c.name)} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns]
        if self.primary_key:
            items.append(f"PRIMARY KEY ({', '.join(bracket(k) for k in self.primary_key)})")
        if items:
            text += f" ({', '.join(items)})"
        given = [(f.name, getattr(self.options, f.name)) for f in fields(self.options)
                 if getattr(self.options, f.name) is not None]
        if given:
            text += " WITH " + ", ".join(f"{_SPELLING[name]}={_quote_value(value)}" for name, value in given)
        if self.select is not None:
            text += " " + self.select
        return text


def bracket(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _quote_value(value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, tuple):
        text = ",".join(value)
    else:
        text = str(value)
    return "'" + text.replace("'", "''") + "'"


def parse_replicate(text: str) -> ReplicateStatement:
    """Parse a task's query; raises ``BadRequest`` (target ``Query``) for anything malformed."""
    if not isinstance(text, str):
        raise BadRequest("the query must be text", target="Query")
    return _Parser(text).statement()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # --- low level ------------------------------------------------------------------------------------------------

    def fail(self, expected: str, at: int | None = None) -> BadRequest:
        at = self.pos if at is None else at
        if at >= len(self.text):
            found = "the end of the statement"
        else:
            snippet = self.text[at:at + 20].split("\n")[0]
            found = f"'{snippet}{'…' if len(self.text) - at > len(snippet) else ''}'"
        return BadRequest(f"REPLICATE statement: at position {at + 1}, expected {expected} but found {found}",
                          target="Query")

    def skip(self) -> None:
        """Skip white space and comments."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch.isspace():
                self.pos += 1
            elif text.startswith("--", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("'*/' closing the comment", n)
                self.pos = end + 2
            else:
                return

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek_word(self) -> str | None:
        match = _WORD.match(self.text, self.pos)
        return match.group(0) if match else None

    def keyword(self, word: str) -> bool:
        """Consume ``word`` (case-insensitive, whole word) if it is next."""
        found = self.peek_word()
        if found is not None and found.upper() == word:
            self.pos += len(found)
            return True
        return False

    def expect_keyword(self, word: str, what: str | None = None) -> None:
        if not self.keyword(word):
            raise self.fail(what or word)

    def char(self, ch: str) -> bool:
        if self.text.startswith(ch, self.pos):
            self.pos += len(ch)
            return True
        return False

    def expect_char(self, ch: str, what: str | None = None) -> None:
        if not self.char(ch):
            raise self.fail(what or f"'{ch}'")

    # --- names ----------------------------------------------------------------------------------------------------

    def name_part(self, what: str) -> str:
        text, start = self.text, self.pos
        opening = text[start:start + 1]
        if opening in _CLOSING:
            closing = _CLOSING[opening]
            pieces, i = [], start + 1
            while True:
                end = text.find(closing, i)
                if end < 0:
                    raise self.fail(f"'{closing}' closing the name that starts at position {start + 1}", len(text))
                pieces.append(text[i:end])
                if text.startswith(closing * 2, end):
                    pieces.append(closing)
                    i = end + 2
                    continue
                self.pos = end + 1
                break
            name = "".join(pieces)
            if not name:
                raise self.fail(what, start)
            return name
        match = _BARE.match(text, start)
        if not match:
            raise self.fail(what)
        self.pos = match.end()
        return match.group(0)

    def table_name(self) -> TableName:
        parts = [self.name_part("a table name")]
        while True:
            mark = self.pos
            self.skip()
            if not self.char("."):
                self.pos = mark
                break
            if len(parts) == 3:
                raise self.fail("at most three name parts (catalog.schema.table)", self.pos - 1)
            self.skip()
            parts.append(self.name_part("a name after '.'"))
        return TableName(tuple(parts))

    # --- column definitions ---------------------------------------------------------------------------------------

    def column_definitions(self) -> tuple[tuple[ColumnDefinition, ...], tuple[str, ...]]:
        columns: list[ColumnDefinition] = []
        key: list[str] = []
        key_at: int | None = None
        self.skip()
        while True:
            start = self.pos
            if self.keyword("PRIMARY"):
                self.skip()
                self.expect_keyword("KEY", "KEY after PRIMARY")
                if key:
                    raise self.fail("one PRIMARY KEY only", start)
                key, key_at = self.key_columns(), start
            else:
                name = self.name_part("a column definition or PRIMARY KEY (...)")
                self.skip()
                type_text, inline_key, nullable = self.column_type()
                if any(c.name.lower() == name.lower() for c in columns):
                    raise self.fail(f"a column name other than '{name}' (it is declared twice)", start)
                columns.append(ColumnDefinition(name, type_text, nullable and not inline_key))
                if inline_key:
                    if key:
                        raise self.fail("one PRIMARY KEY only", start)
                    key, key_at = [name], start
            self.skip()
            if self.char(")"):
                break
            self.expect_char(",", "',' or ')'")
            self.skip()
        if columns and key:
            declared = {c.name.lower() for c in columns}
            missing = [k for k in key if k.lower() not in declared]
            if missing:
                raise self.fail(f"PRIMARY KEY columns among the declared columns ('{missing[0]}' is not declared)",
                                key_at)
        return tuple(columns), tuple(key)

    def key_columns(self) -> list[str]:
        self.skip()
        self.expect_char("(", "'(' after PRIMARY KEY")
        names: list[str] = []
        while True:
            self.skip()
            start = self.pos
            name = self.name_part("a key column name")
            if name.lower() in (n.lower() for n in names):
                raise self.fail(f"a key column other than '{name}' (it is listed twice)", start)
            names.append(name)
            self.skip()
            if self.char(")"):
                return names
            self.expect_char(",", "',' or ')' in the PRIMARY KEY list")

    def column_type(self) -> tuple[str, bool, bool]:
        """The type text up to the next top-level ``,`` or ``)``; returns (type, inline primary key, nullable)."""
        text, start, depth = self.text, self.pos, 0
        i = start
        while i < len(text):
            ch = text[i]
            if ch == "'":
                end = text.find("'", i + 1)
                while end >= 0 and text.startswith("''", end):
                    end = text.find("'", end + 2)
                if end < 0:
                    raise self.fail("a closing quote", len(text))
                i = end + 1
                continue
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "," and depth == 0:
                break
            i += 1
        else:
            raise self.fail("')' closing the column definitions", len(text))
        type_text = text[start:i].strip()
        self.pos = i
        inline_key, nullable = False, True
        while True:
            match = _CONSTRAINT.search(" " + type_text)
            if not match:
                break
            words = match.group(1).upper().split()
            if words[0] == "PRIMARY":
                inline_key = True
            elif words[0] == "NOT":
                nullable = False
            type_text = (" " + type_text)[:match.start()].strip()
        if not type_text:
            raise self.fail("a data type after the column name", start)
        return " ".join(type_text.split()), inline_key, nullable

    # --- options --------------------------------------------------------------------------------------------------

    def options_follow(self) -> bool:
        """True when a WITH clause of replication options starts here (not a common table expression)."""
        word = self.peek_word()
        if word is None:
            return False
        rest = self.text[self.pos + len(word):].lstrip()
        if rest.startswith("="):
            return True  # no SQL has 'WITH name =': an option, known or not
        if option_name(word) is None:
            return False
        return rest[:1] in (",", ";", "") or (is_boolean(word) and _starts_select(rest))

    def options(self) -> Options:
        pairs: list[tuple[str, object]] = []
        seen: dict[str, int] = {}
        while True:
            self.skip()
            start = self.pos
            match = _WORD.match(self.text, self.pos)
            if not match:
                raise self.fail("an option name")
            name = match.group(0)
            canonical = option_name(name)
            if canonical is None:
                raise BadRequest(f"REPLICATE statement: at position {start + 1}, unknown option '{name}'; the options "
                                 f"are {', '.join(sorted(OPTIONS))}", target="Query")
            field_name = OPTIONS[canonical][0]
            if field_name in seen:
                raise self.fail(f"each option once ('{name}' is given twice)", start)
            seen[field_name] = start
            self.pos = match.end()
            self.skip()
            value_at = self.pos
            if self.char("="):
                self.skip()
                value_at = self.pos
                value: object = self.option_value()
            elif is_boolean(canonical):
                value = True
            else:
                raise self.fail(f"'=' and a value for {canonical}")
            try:
                pairs.append((canonical, OPTIONS[canonical][1](value, canonical)))
            except BadRequest as exc:
                raise BadRequest(f"REPLICATE statement: at position {value_at + 1}, {exc.message}",
                                 target="Query") from None
            mark = self.pos
            self.skip()
            if not self.char(","):
                self.pos = mark
                return _options(pairs)

    def option_value(self) -> str:
        text, start = self.text, self.pos
        quote = text[start:start + 1]
        if quote in ("'", '"'):
            pieces, i = [], start + 1
            while True:
                end = text.find(quote, i)
                if end < 0:
                    raise self.fail(f"a closing {quote} for the value that starts at position {start + 1}", len(text))
                pieces.append(text[i:end])
                if text.startswith(quote * 2, end):
                    pieces.append(quote)
                    i = end + 2
                    continue
                self.pos = end + 1
                return "".join(pieces)
        match = re.compile(r"[^\s,;'\"()]+").match(text, start)
        if not match:
            raise self.fail("an option value")
        self.pos = match.end()
        return match.group(0)

    # --- the statement --------------------------------------------------------------------------------------------

    def statement(self) -> ReplicateStatement:
        self.skip()
        self.expect_keyword("REPLICATE")
        self.skip()
        target = self.table_name()
        self.skip()
        columns: tuple[ColumnDefinition, ...] = ()
        key: tuple[str, ...] = ()
        if self.text.startswith("(", self.pos) and not _starts_select(self.text[self.pos + 1:].lstrip()):
            self.pos += 1
            columns, key = self.column_definitions()
            self.skip()
        options = Options()
        with_at = self.pos
        if self.keyword("WITH"):
            self.skip()
            if self.options_follow():
                options = self.options()
                self.skip()
            else:
                self.pos = with_at  # a common table expression: part of the SELECT
        select = None
        if not self.at_end() and not self.text.startswith(";", self.pos):
            if not _starts_select(self.text[self.pos:]):
                raise self.fail("',' between options, SELECT or the end of the statement" if options.given()
                                else "SELECT, WITH, '(' or the end of the statement")
            select, trailing = self.select_text(self.pos)
            if trailing is not None:
                if options.given():
                    raise self.fail("one WITH clause of options (there is one before the SELECT already)", trailing)
                self.pos = trailing
                self.expect_keyword("WITH")
                options = self.options()
                self.skip()
            else:
                self.pos = len(self.text)
        self.char(";")
        self.skip()
        if not self.at_end():
            raise self.fail("',' or the end of the statement" if options.given() else "the end of the statement")
        return ReplicateStatement(target=target, select=select, columns=columns, primary_key=key, options=options)

    def select_text(self, start: int) -> tuple[str, int | None]:
        """The SELECT's text (a final ``;`` removed) and where a trailing WITH clause of options starts, if any."""
        text = self.text
        trailing: int | None = None
        end = len(text)
        for i, ch, depth in _top_level(text, start):
            if depth:
                continue
            if ch == ";":
                rest = i + 1
                self.pos = rest
                self.skip()
                if not self.at_end():
                    raise self.fail("the end of the statement (one statement per task)")
                end = i
                break
            if ch in "wW" and text[i:i + 4].upper() == "WITH" and i > start and not _is_word(text[i - 1]) \
                    and not _is_word(text[i + 4:i + 5]):
                self.pos = i + 4
                self.skip()
                if self.options_follow():
                    trailing = i
        if trailing is not None:
            end = trailing
        select = text[start:end].strip()
        if not select:
            raise self.fail("a SELECT statement", start)
        return select, trailing


def _options(pairs: list[tuple[str, object]]) -> Options:
    return Options(**{OPTIONS[name][0]: value for name, value in pairs})


def _is_word(ch: str) -> bool:
    return bool(ch) and (ch.isalnum() or ch in "_$#@")


def _starts_select(text: str) -> bool:
    word = _WORD.match(text)
    return text.startswith("(") or (word is not None and word.group(0).upper() in ("SELECT", "WITH"))


def _top_level(text: str, start: int) -> Iterator[tuple[int, str, int]]:
    """Each character outside quotes, brackets and comments, with its parenthesis depth."""
    i, n, depth = start, len(text), 0
    while i < n:
        ch = text[i]
        if ch in "'\"`[":
            closing = "]" if ch == "[" else ch
            end = text.find(closing, i + 1)
            while end >= 0 and text.startswith(closing * 2, end):
                end = text.find(closing, end + 2)
            i = n if end < 0 else end + 1
            continue
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        yield i, ch, depth
        i += 1
