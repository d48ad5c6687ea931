"""CSV: a folder where each ``*.csv`` file (with a header row) is a table; source and destination.

Column types are detected from the first ``RowScanDepth`` rows (``TypeDetectionScheme=None``: everything is text).
The encoding is UTF-8 (a BOM is skipped) unless ``Charset`` says otherwise; a file that is not valid UTF-8 is read as
cp1252 / latin-1. As a destination, rows are appended; upserts and deletes rewrite the file through a temporary copy.
A transaction keeps appends revertible (the original length is remembered) and rewrites in shadow files that replace
the originals on commit, so a rolled-back batch leaves the files as they were. Dropping, renaming and swapping files
cannot be undone that way, so they are refused inside a transaction.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import operator
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from odata_sync.errors import BadRequest, ConnectionFailed

from . import text_types, values
from .base import BatchReader, ColumnInfo, Connector, TableInfo, WriteCounts
from .threads import ConnectionThread
from .types import CSV_TABLE_WARNING, TypeWarning

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 128 KiB per field is too small for real data

_SNIFF_BYTES = 1 << 20
_shadow_ids = itertools.count(1)
_COMPARE = {"=": operator.eq, "<>": operator.ne, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}


@dataclass
class _Pending:
    """What a transaction changed in one file: its length before appends, and the shadow file of a rewrite."""

    original_size: int
    shadow: Path | None = None


def _detect_encoding(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        head.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


class _Reader:
    def __init__(self, connector: CSVConnector, rows: Iterator[tuple], handle: TextIO) -> None:
        self._connector, self._rows, self._handle = connector, rows, handle

    def _fetch(self, size: int) -> list[tuple]:
        batch = []
        for row in self._rows:
            batch.append(row)
            if len(batch) >= size:
                break
        return batch

    async def fetch(self, size: int) -> list[tuple]:
        return await self._connector._run(self._fetch, size)

    async def close(self) -> None:
        await self._connector._run(self._handle.close)


class CSVConnector(Connector):
    provider = "CSV"
    driver_errors = (csv.Error, UnicodeError)
    untransactional_ddl = frozenset({"drop_table", "rename_table", "swap_tables"})

    def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        uri = str(settings["URI"])
        self.folder = Path(uri.removeprefix("file://")).expanduser()
        self.delimiter: str = settings.get("Delimiter", ",")  # validated by connstr.validate
        self.charset: str | None = settings.get("Charset")
        self.detect_types = settings.get("TypeDetectionScheme", "RowScan") == "RowScan"
        self.scan_depth = max(int(settings.get("RowScanDepth", 100)), 1)
        self._thread: ConnectionThread | None = None
        self._journal: dict[Path, _Pending] | None = None
        self._types: dict[tuple[Path, float, int], list[ColumnInfo]] = {}

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._thread is None:
            self._thread = ConnectionThread("odsync-csv")
        return await self._thread.run(fn, *args)

    # --- files ------------------------------------------------------------------------------------------------------

    def _resolve(self, table: str, schema: str | None) -> tuple[str | None, str]:
        name = table.strip()
        if name.lower().endswith(".csv"):
            name = name[:-4]
        if not name or any(sep in name for sep in ("/", "\\", "\0")) or name in (".", ".."):
            raise BadRequest(f"'{table}' is not a valid CSV table name", target="Table")
        return None, name

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise ConnectionFailed(f"CSV folder '{self.folder}' does not exist or is not a folder")
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())

    def _file(self, table: str, *, must_exist: bool = True) -> Path:
        exact = self.folder / f"{table}.csv"
        if exact.is_file():
            return exact
        for path in self._files():
            if path.stem.lower() == table.lower():
                return path
        if must_exist:
            raise BadRequest(f"table '{table}' was not found (no {table}.csv in {self.folder})", target="Table")
        return exact

    def _current(self, path: Path) -> Path:
        """The file holding the table's content as this transaction sees it."""
        pending = self._journal.get(path) if self._journal is not None else None
        return pending.shadow if pending and pending.shadow else path

    def _encoding(self, path: Path) -> str:
        """The file's encoding, for reading and for writing to it (appends and rewrites keep a file's encoding)."""
        if self.charset:
            if codecs.lookup(self.charset).name == "utf-8":
                return _detect_encoding(path) if path.is_file() and path.stat().st_size else "utf-8"
            return self.charset
        return _detect_encoding(path) if path.is_file() else "utf-8"

    def _open_text(self, path: Path) -> TextIO:
        return path.open("r", encoding=self._encoding(path), newline="")

    def _reader(self, handle: TextIO) -> Iterator[list[str]]:
        return csv.reader(handle, delimiter=self.delimiter)

    def _writer(self, handle: TextIO) -> Any:
        return csv.writer(handle, delimiter=self.delimiter, lineterminator="\r\n")

    @staticmethod
    def _header(raw: list[str]) -> list[str]:
        names: list[str] = []
        for i, name in enumerate(raw):
            name = name.strip() or f"Column{i + 1}"
            base, n = name, 2
            while name in names:
                name, n = f"{base}_{n}", n + 1
            names.append(name)
        return names

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def _open(self, *, create_missing: bool = False) -> None:
        if create_missing and not self.folder.exists():
            await self._run(lambda: self.folder.mkdir(parents=True, exist_ok=True))

    async def _ensure_created(self) -> None:
        await self._open(create_missing=True)

    async def _close(self) -> None:
        if self._journal:
            await self._run(self._undo)
        self._journal = None
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None

    async def _ping(self) -> None:
        def ping() -> None:
            files = self._files()
            if not os.access(self.folder, os.R_OK | os.X_OK):
                raise ConnectionFailed(f"CSV folder '{self.folder}' is not readable")
            if files:
                with self._open_text(files[0]) as handle:
                    next(self._reader(handle), None)
        await self._run(ping)

    # --- metadata ---------------------------------------------------------------------------------------------------

    async def _list_tables(self, kind: str, schema: str | None) -> list[TableInfo]:
        if kind == "VIEWS":
            return []
        return [TableInfo(path.stem, None, None, "TABLE") for path in await self._run(self._files)]

    def _describe(self, path: Path) -> list[ColumnInfo]:
        stat = path.stat()
        cache_key = (path, stat.st_mtime, stat.st_size)
        if cache_key in self._types:
            return self._types[cache_key]
        with self._open_text(path) as handle:
            reader = self._reader(handle)
            header = self._header(next(reader, []))
            samples: list[list[str]] = [[] for _ in header]
            if self.detect_types:
                for number, row in enumerate(reader, 1):
                    for i, value in enumerate(row[:len(header)]):
                        samples[i].append(value)
                    if number >= self.scan_depth:
                        break
        columns = []
        for i, name in enumerate(header):
            ctype = text_types.detect(samples[i]) if self.detect_types else text_types.TEXT
            columns.append(ColumnInfo.of(name, ctype, ordinal=i + 1))
        self._types[cache_key] = columns
        return columns

    async def _list_columns(self, table: str, schema: str | None) -> list[ColumnInfo]:
        def describe() -> list[ColumnInfo]:
            path = self._file(table, must_exist=False)
            return self._describe(self._current(path)) if self._current(path).is_file() else []
        return await self._run(describe)

    async def _estimate_rows(self, table: str, schema: str | None) -> int | None:
        def count() -> int:
            lines = 0
            with self._file(table).open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    lines += chunk.count(b"\n")
            return max(lines - 1, 0)
        return await self._run(count)

    # --- reading ----------------------------------------------------------------------------------------------------

    async def _start_read(self, query: str | None, table: tuple[str | None, str] | None, columns: list[str],
                          where: list, order_by: list[str], batch_size: int) -> tuple[list[ColumnInfo], BatchReader]:
        if table is None:
            raise BadRequest("CSV connections read whole tables, not SELECT statements (filter with the task's "
                             "columns and conditions instead)")
        if order_by:
            raise BadRequest("CSV connections cannot sort rows")
        name = table[1]

        def start() -> tuple[list[ColumnInfo], _Reader]:
            path = self._file(name)
            described = self._describe(path)
            by_name = {c.name: c for c in described}
            wanted = [by_name.get(c) or _missing_column(c, name) for c in columns] if columns else described
            positions = [described.index(c) for c in wanted]
            index = {c.name: i for i, c in enumerate(described)}
            parsers = [text_types.parser(c.canonical) for c in described]
            tests = []
            for column, op, value in where:
                if column not in index:
                    _missing_column(column, name)
                op = op.strip().upper()
                if op not in _COMPARE:
                    raise BadRequest(f"unsupported filter operator '{op}'")
                if value is None and op not in ("=", "<>", "!="):
                    raise BadRequest(f"filter on '{column}': NULL can only be compared with = or <>")
                coerce = values.coercer(described[index[column]].canonical)
                tests.append((index[column], _COMPARE[op], None if value is None else coerce(value)))
            handle = self._open_text(path)
            try:
                rows = self._rows(handle, path, described, parsers, positions, tests)
            except BaseException:
                handle.close()
                raise
            return wanted, _Reader(self, rows, handle)
        return await self._run(start)

    def _rows(self, handle: TextIO, path: Path, described: list[ColumnInfo], parsers: list, positions: list[int],
              tests: list) -> Iterator[tuple]:
        reader = self._reader(handle)
        next(reader, None)  # header
        width = len(described)
        for raw in reader:
            if not raw:
                continue  # blank line
            if len(raw) != width:
                if len(raw) > width and not any(v.strip() for v in raw[width:]):
                    raw = raw[:width]  # trailing delimiters
                elif len(raw) < width:
                    raw = raw + [""] * (width - len(raw))  # a short row: the missing fields are NULL
                else:
                    raise ConnectionFailed(f"CSV {path.name} line {reader.line_num}: {len(raw)} fields but the "
                                           f"header has {width}")
            row: list[Any] = [None] * width
            for i in positions if not tests else range(width):
                text = raw[i]
                if text == "":
                    continue
                try:
                    row[i] = parsers[i](text)
                except (ValueError, KeyError, ArithmeticError):
                    shown = text if len(text) <= 40 else text[:37] + "..."
                    raise ConnectionFailed(
                        f"CSV {path.name} line {reader.line_num}: '{shown}' in column '{described[i].name}' is not a "
                        f"{described[i].canonical} value (types are detected from the first {self.scan_depth} rows: "
                        "raise RowScanDepth or set TypeDetectionScheme=None)") from None
            if tests and not _matches(row, tests):
                continue
            yield tuple(row[i] for i in positions)

    # --- writing ----------------------------------------------------------------------------------------------------

    def _header_of(self, path: Path) -> list[str]:
        with self._open_text(path) as handle:
            return self._header(next(self._reader(handle), []))

    async def _create_table(self, table: str, columns: list[ColumnInfo], primary_key: list[str],
                            schema: str | None) -> list[TypeWarning]:
        def create() -> None:
            path = self.folder / f"{table}.csv"
            if self._file(table, must_exist=False).exists():
                raise BadRequest(f"table '{table}' already exists ({path.name})")
            with path.open("x", encoding=self.charset or "utf-8", newline="") as handle:
                self._writer(handle).writerow([c.name for c in columns])
        await self._run(create)
        return [TypeWarning(self.provider, None, "all", "text", CSV_TABLE_WARNING)]

    def _rewrite(self, path: Path, transform: Any) -> Any:
        """Stream the table's current content through ``transform(reader, writer)`` into a shadow file."""
        source = self._current(path)
        shadow = path.with_name(f".{path.name}.{os.getpid()}.{next(_shadow_ids)}.tmp")
        encoding = self._encoding(source)
        with self._open_text(source) as src, shadow.open("w", encoding=encoding, newline="") as dst:
            result = transform(self._reader(src), self._writer(dst))
        pending = self._pending(path)
        if pending.shadow is not None and pending.shadow != shadow:
            pending.shadow.unlink(missing_ok=True)
        pending.shadow = shadow
        return result

    def _pending(self, path: Path) -> _Pending:
        assert self._journal is not None
        if path not in self._journal:
            self._journal[path] = _Pending(path.stat().st_size)
        return self._journal[path]

    async def _add_column(self, table: str, column: ColumnInfo, schema: str | None) -> list[TypeWarning]:
        def add() -> None:
            path = self._file(table)

            def transform(reader: Iterator[list[str]], writer: Any) -> None:
                header = next(reader, [])
                writer.writerow([*header, column.name])
                for row in reader:
                    writer.writerow([*row, ""])
            self._rewrite(path, transform)
        await self._run(add)
        return []

    async def _write_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                           rows: Sequence[Sequence[Any]]) -> None:
        def append() -> None:
            path = self._file(table)
            target = self._current(path)
            names = [c.name for c in columns]
            order = [names.index(h) if h in names else None for h in self._header_of(target)]
            if target == path:
                self._pending(path)
            with target.open("a", encoding=self._encoding(target), newline="") as handle:
                writer = self._writer(handle)
                writer.writerows(_texts(row, order) for row in rows)
        await self._run(append)

    async def _upsert_batch(self, table: str, schema: str | None, columns: list[ColumnInfo],
                            rows: Sequence[Sequence[Any]], key: list[str]) -> WriteCounts:
        names = [c.name for c in columns]

        def upsert() -> WriteCounts:
            path = self._file(table)
            header = self._header_of(self._current(path))
            order = [names.index(h) if h in names else None for h in header]
            key_at = [header.index(k) for k in key if k in header]
            if len(key_at) != len(key):
                raise BadRequest(f"key columns {key} are not all in {path.name}")
            incoming = {}
            for row in rows:
                text = _texts(row, order)
                incoming[tuple(text[i] for i in key_at)] = text
            counts = WriteCounts()

            def transform(reader: Iterator[list[str]], writer: Any) -> None:
                writer.writerow(next(reader, header))
                for existing in reader:
                    new = incoming.pop(tuple(existing[i] if i < len(existing) else "" for i in key_at), None)
                    if new is None:
                        writer.writerow(existing)
                        continue
                    if new != existing[:len(header)] + [""] * (len(header) - len(existing)):
                        counts.updated += 1
                    writer.writerow(new)
                writer.writerows(incoming.values())
                counts.inserted = len(incoming)
            self._rewrite(path, transform)
            return counts
        return await self._run(upsert)

    async def _delete_keys(self, table: str, schema: str | None, key_columns: list[ColumnInfo],
                           keys: Sequence[Sequence[Any]]) -> int:
        def delete() -> int:
            path = self._file(table)
            header = self._header_of(self._current(path))
            key_at = [header.index(c.name) for c in key_columns]
            doomed = {tuple(values.to_text(v) if v is not None else "" for v in key) for key in keys}
            deleted = 0

            def transform(reader: Iterator[list[str]], writer: Any) -> None:
                nonlocal deleted
                writer.writerow(next(reader, header))
                for row in reader:
                    if tuple(row[i] if i < len(row) else "" for i in key_at) in doomed:
                        deleted += 1
                    else:
                        writer.writerow(row)
            self._rewrite(path, transform)
            return deleted
        return await self._run(delete)

    async def _drop_table(self, table: str, schema: str | None) -> None:
        def drop() -> None:
            self._file(table, must_exist=False).unlink(missing_ok=True)
        await self._run(drop)

    async def _truncate(self, table: str, schema: str | None) -> None:
        def truncate() -> None:
            path = self._file(table)

            def transform(reader: Iterator[list[str]], writer: Any) -> None:
                writer.writerow(next(reader, []))
            self._rewrite(path, transform)
        await self._run(truncate)

    async def _rename_table(self, table: str, new_name: str, schema: str | None) -> None:
        def rename() -> None:
            source, target = self._file(table), self.folder / f"{new_name}.csv"
            if self._file(new_name, must_exist=False).exists():
                raise BadRequest(f"table '{new_name}' already exists")
            os.replace(source, target)
        await self._run(rename)

    async def _swap_tables(self, first: str, second: str, schema: str | None) -> None:
        def swap() -> None:
            a, b = self._file(first), self._file(second)
            spare = a.with_name(f".{a.name}.swap.tmp")
            os.replace(a, spare)
            os.replace(b, a)
            os.replace(spare, b)
        await self._run(swap)

    # --- transactions -----------------------------------------------------------------------------------------------

    async def _begin(self) -> None:
        self._journal = {}

    async def _commit(self) -> None:
        def commit() -> None:
            journal, self._journal = self._journal or {}, None
            for path, pending in journal.items():
                if pending.shadow is not None:
                    os.replace(pending.shadow, path)
        await self._run(commit)

    def _undo(self) -> None:
        journal, self._journal = self._journal or {}, None
        for path, pending in journal.items():
            if pending.shadow is not None:
                pending.shadow.unlink(missing_ok=True)
            if path.exists():
                with path.open("r+b") as handle:
                    handle.truncate(pending.original_size)

    async def _rollback(self) -> None:
        await self._run(self._undo)


def _texts(row: Sequence[Any], order: list[int | None]) -> list[str]:
    """A row's values in the file's column order, as CSV text (NULL and absent columns are empty fields)."""
    return ["" if i is None or row[i] is None else values.to_text(row[i]) for i in order]


def _matches(row: list[Any], tests: list[tuple[int, Any, Any]]) -> bool:
    """Client-side filter with SQL's NULL rules: ``= None`` is IS NULL, and NULL satisfies no comparison."""
    for i, compare, limit in tests:
        value = row[i]
        if limit is None:
            if compare is operator.eq and value is not None or compare is operator.ne and value is None:
                return False
            continue
        if value is None:
            return False
        try:
            if not compare(value, limit):
                return False
        except TypeError:
            return False
    return True


def _missing_column(column: str, table: str) -> Any:
    raise BadRequest(f"column '{column}' is not in table '{table}'", target=column)

