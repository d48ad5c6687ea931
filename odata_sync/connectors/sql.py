"""SQL text helpers shared by the database connectors: quoting, qualified names, filters, SELECT detection.

Values never go into SQL text: filters render placeholders and return their parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from odata_sync.errors import BadRequest

#: A filter on a column: ``(column, operator, value)`` with operator one of ``= <> != < <= > >=``.
Condition = tuple[str, str, Any]
OPERATORS = ("=", "<>", "!=", "<", "<=", ">", ">=")

_SELECT = re.compile(r"^\s*(?:\(\s*)*(select|with|values|table|from)\b", re.IGNORECASE)


def is_select(text: str) -> bool:
    """True when ``text`` is a query rather than a table name."""
    return bool(_SELECT.match(text))


def quote_ident(name: str, quote: str = '"') -> str:
    """Quote one identifier; the quote character inside is doubled."""
    if not name:
        raise BadRequest("an empty name is not a valid table or column name")
    return quote + name.replace(quote, quote * 2) + quote


def split_name(name: str) -> list[str]:
    """``public.orders`` / ``"my schema"."t"`` / ``[dbo].[t]`` / ```db`.`t``` -> its parts, unquoted."""
    parts: list[str] = []
    i, n = 0, len(name)
    closing = {'"': '"', "`": "`", "[": "]"}
    current: list[str] = []
    while i < n:
        ch = name[i]
        if ch in closing and not current:
            end_char = closing[ch]
            i += 1
            while True:
                end = name.find(end_char, i)
                if end < 0:
                    raise BadRequest(f"unterminated quoted name in '{name}'")
                current.append(name[i:end])
                if end + 1 < n and name[end + 1] == end_char and end_char != "]":
                    current.append(end_char)
                    i = end + 2
                    continue
                i = end + 1
                break
            if i < n and name[i] != ".":
                raise BadRequest(f"unexpected text after a quoted name in '{name}'")
        elif ch == ".":
            parts.append("".join(current).strip())
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    parts.append("".join(current).strip())
    if any(not part for part in parts):
        raise BadRequest(f"'{name}' is not a valid table name")
    return parts


def resolve_table(table: str, schema: str | None) -> tuple[str | None, str]:
    """Split a possibly qualified table name; an explicit ``schema`` argument wins over a qualified one."""
    parts = split_name(table)
    if len(parts) == 1:
        return schema, parts[0]
    if len(parts) > 3:
        raise BadRequest(f"'{table}' has too many name parts")
    return schema or parts[-2], parts[-1]


def render_where(conditions: Sequence[Condition], quote: Callable[[str], str],
                 placeholder: Callable[[int], str], encode: Callable[[str, Any], Any] | None = None,
                 start: int = 1) -> tuple[str, list[Any]]:
    """``[('updated_at', '>=', mark)]`` -> ``('"updated_at" >= $1', [mark])``; ``= None`` becomes ``IS NULL``."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in conditions:
        op = op.strip().upper()
        if op not in OPERATORS:
            raise BadRequest(f"unsupported filter operator '{op}' (use one of {' '.join(OPERATORS)})")
        if value is None:
            if op not in ("=", "<>", "!="):
                raise BadRequest(f"filter on '{column}': NULL can only be compared with = or <>")
            clauses.append(f"{quote(column)} IS {'NOT ' if op != '=' else ''}NULL")
            continue
        params.append(encode(column, value) if encode else value)
        clauses.append(f"{quote(column)} {'<>' if op == '!=' else op} {placeholder(start + len(params) - 1)}")
    return " AND ".join(clauses), params


def build_select(source: str, columns: Sequence[str] | None, conditions: Sequence[Condition],
                 order_by: Sequence[str], *, quote: Callable[[str], str], from_sql: str,
                 placeholder: Callable[[int], str], encode: Callable[[str, Any], Any] | None = None,
                 select_list: Sequence[str] | None = None) -> tuple[str, list[Any]]:
    """A SELECT over a table (``from_sql`` is its quoted name) or over a wrapped query, with filter and order."""
    if select_list is not None:
        projection = ", ".join(select_list)
    else:
        projection = ", ".join(quote(c) for c in columns) if columns else "*"
    sql = f"SELECT {projection} FROM {from_sql}"
    where, params = render_where(conditions, quote, placeholder, encode)
    if where:
        sql += f" WHERE {where}"
    if order_by:
        sql += " ORDER BY " + ", ".join(_order_term(term, quote) for term in order_by)
    return sql, params


def _order_term(term: str, quote: Callable[[str], str]) -> str:
    name, _, direction = term.strip().rpartition(" ")
    if direction.upper() in ("ASC", "DESC") and name:
        return f"{quote(name.strip())} {direction.upper()}"
    return quote(term.strip())


def merge_statements(target: str, stage: str, columns: Sequence[str], key: Sequence[str],
                     quote: Callable[[str], str], differs: Callable[[str, str, str], str], *,
                     join_delete: bool = False, rowid_delete: bool = False) -> tuple[str, str]:
    """The two statements of an upsert from a staged batch: delete changed rows, then insert missing ones.

    Deleting only rows that differ (``differs(left, right, column)`` is the dialect's null-safe inequality) and then
    inserting the staged rows whose key is absent gives exact counts: deleted = updated, inserted - deleted = new,
    and a row already equal to the staged one is not touched. ``join_delete`` uses MySQL's multi-table DELETE;
    ``rowid_delete`` (SQLite) walks the staged batch and finds target rows by key, so a batch costs its own size,
    not the target table's.
    """
    key_match = " AND ".join(f"_s.{quote(k)} = _t.{quote(k)}" for k in key)
    others = [c for c in columns if c not in key]
    diff = " OR ".join(differs(f"_s.{quote(c)}", f"_t.{quote(c)}", c) for c in others) or "1 = 0"
    if join_delete:
        delete = f"DELETE _t FROM {target} AS _t JOIN {stage} AS _s ON {key_match} WHERE {diff}"
    elif rowid_delete:
        delete = (f"DELETE FROM {target} WHERE rowid IN (SELECT _t.rowid FROM {stage} AS _s "
                  f"JOIN {target} AS _t ON {key_match} WHERE {diff})")
    else:
        delete = (f"DELETE FROM {target} AS _t WHERE EXISTS "
                  f"(SELECT 1 FROM {stage} AS _s WHERE {key_match} AND ({diff}))")
    names = ", ".join(quote(c) for c in columns)
    staged = ", ".join(f"_s.{quote(c)}" for c in columns)
    insert = (f"INSERT INTO {target} ({names}) SELECT {staged} FROM {stage} AS _s "
              f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS _t WHERE {key_match})")
    return delete, insert


def delete_statement(target: str, stage: str, key: Sequence[str], quote: Callable[[str], str], *,
                     join_delete: bool = False, rowid_delete: bool = False) -> str:
    """Delete the rows of ``target`` whose key is staged in ``stage``."""
    key_match = " AND ".join(f"_s.{quote(k)} = _t.{quote(k)}" for k in key)
    if join_delete:
        return f"DELETE _t FROM {target} AS _t JOIN {stage} AS _s ON {key_match}"
    if rowid_delete:
        return (f"DELETE FROM {target} WHERE rowid IN "
                f"(SELECT _t.rowid FROM {stage} AS _s JOIN {target} AS _t ON {key_match})")
    return f"DELETE FROM {target} AS _t WHERE EXISTS (SELECT 1 FROM {stage} AS _s WHERE {key_match})"


_IDENT_BRACKET = re.compile(r"\[([^\[\]\d,:'\"][^\[\]:,'\"]*)\]")


def brackets_to_quotes(sql: str, quote: str) -> str:
    """Turn CData-style ``[name]`` identifiers into the dialect's quoting, outside literals and comments.

    Array subscripts (``a[1]``, ``a[i]`` right after a name) and list literals (``[1, 2]``) are left alone.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i:end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif ch == "[":
            before = out[-1][-1:] if out else ""
            match = _IDENT_BRACKET.match(sql, i)
            if match and not (before.isalnum() or before in "_])\"`"):
                out.append(quote_ident(match.group(1), quote))
                i = match.end()
            else:
                out.append(ch)
                i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def column_definitions(provider: str, columns: Sequence, primary_key: Sequence[str],
                       quote: Callable[[str], str]) -> tuple[list[str], list]:
    """``name TYPE [NOT NULL]`` items (and the PRIMARY KEY clause) of a CREATE TABLE, with lossy-type warnings."""
    from .types import map_columns

    ddl, warnings = map_columns(provider, [(c.name, c.canonical) for c in columns], list(primary_key))
    parts = [f"{quote(c.name)} {t}{'' if c.nullable and c.name not in primary_key else ' NOT NULL'}"
             for c, t in zip(columns, ddl, strict=True)]
    if primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quote(k) for k in primary_key)})")
    return parts, warnings
