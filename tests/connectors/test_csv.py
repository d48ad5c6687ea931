"""CSV folders as written by other tools: ragged rows, a BOM, latin-1, type detection and its limits."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pytest

from odata_sync.connectors import open_connector
from odata_sync.connectors import types as T
from odata_sync.connectors.text_types import detect
from odata_sync.errors import BadRequest, ConnectionFailed


async def read_csv(folder: Path, table: str, extra: str = "", **options) -> tuple[list, list[tuple]]:
    async with open_connector("CSV", f"URI={folder}{extra}") as connector:
        columns, batches = await connector.read(table, 2, **options)
        return columns, [row async for batch in batches for row in batch]


async def test_tables_are_the_csv_files(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("x\n1\n")
    (tmp_path / "A.CSV").write_text("y\n2\n")
    (tmp_path / "notes.txt").write_text("not a table")
    (tmp_path / "dir.csv").mkdir()
    async with open_connector("CSV", f"URI={tmp_path}") as connector:
        await connector.test()
        assert [t.name for t in await connector.list_tables()] == ["A", "b"]
        assert await connector.list_tables("VIEWS") == []
        assert [c.name for c in await connector.list_columns("a")] == ["y"]  # case-insensitive lookup
        assert await connector.estimate_rows("b") == 1


async def test_ragged_rows(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8,,\n9\n")
    columns, rows = await read_csv(tmp_path, "r")
    assert [c.name for c in columns] == ["a", "b", "c"]
    assert rows == [(1, 2, 3), (4, 5, None), (6, 7, 8), (9, None, None)]


async def test_a_row_with_extra_values_is_an_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ConnectionFailed, match="line 3"):
        await read_csv(tmp_path, "r")


async def test_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes("\ufeffid,name\n1,Zoë\n".encode())
    columns, rows = await read_csv(tmp_path, "bom")
    assert columns[0].name == "id"
    assert rows == [(1, "Zoë")]


async def test_latin1_and_cp1252_files_are_decoded(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes("name,city\nJosé,Zürich\nÅsa,Malmö\n".encode("latin-1"))
    (tmp_path / "win.csv").write_bytes("price\n€5\n".encode("cp1252"))
    _, rows = await read_csv(tmp_path, "latin")
    assert rows == [("José", "Zürich"), ("Åsa", "Malmö")]
    _, rows = await read_csv(tmp_path, "win")
    assert rows == [("€5",)]
    _, rows = await read_csv(tmp_path, "latin", ";Charset=latin-1")
    assert rows[0] == ("José", "Zürich")


async def test_delimiter_and_quoted_fields(tmp_path: Path) -> None:
    (tmp_path / "semi.csv").write_text('id;text\n1;"a;b ""quoted""\nsecond line"\n')
    _, rows = await read_csv(tmp_path, "semi", ";Delimiter=';'")
    assert rows == [(1, 'a;b "quoted"\nsecond line')]


async def test_types_are_detected_from_the_values(tmp_path: Path) -> None:
    (tmp_path / "typed.csv").write_text(
        "i,d,f,b,day,ts,tz,u,zip,j,bin,t\n"
        "1,1.50,1e-3,true,2024-01-31,2024-01-31 10:00:00,2024-01-31T10:00:00+02:00,"
        "12345678-1234-5678-1234-567812345678,00123,\"{\"\"a\"\": 1}\",\\x00ff,10:30:00\n"
        "-2,22.125,2.5,false,2024-02-01,2024-02-01 11:00:00.5,2024-02-01T10:00:00Z,"
        "12345678-1234-5678-1234-567812345679,00456,[1],\\x,23:59:59.999999\n")
    columns, rows = await read_csv(tmp_path, "typed")
    kinds = {c.name: c.canonical for c in columns}
    assert kinds["i"] == T.INT64
    assert kinds["d"].kind == "decimal" and kinds["d"].scale == 3
    assert kinds["f"] == T.FLOAT64
    assert kinds["b"] == T.BOOLEAN
    assert kinds["day"] == T.DATE
    assert kinds["ts"] == T.TIMESTAMP
    assert kinds["tz"] == T.TIMESTAMPTZ
    assert kinds["u"] == T.UUID
    assert kinds["zip"] == T.TEXT  # leading zeros: an identifier, not a number
    assert kinds["j"] == T.JSON
    assert kinds["bin"] == T.BINARY
    assert kinds["t"] == T.TIME
    first = rows[0]
    assert first[1] == decimal.Decimal("1.50") and first[4] == dt.date(2024, 1, 31)
    assert first[6] == dt.datetime(2024, 1, 31, 8, tzinfo=dt.UTC)
    assert first[10] == b"\x00\xff" and rows[1][10] == b""


async def test_no_type_detection_reads_text(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("n\n1\n2\n")
    columns, rows = await read_csv(tmp_path, "t", ";TypeDetectionScheme=None")
    assert columns[0].canonical == T.TEXT and rows == [("1",), ("2",)]


async def test_a_value_beyond_the_scanned_rows_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "late.csv").write_text("n\n" + "1\n" * 10 + "oops\n")
    with pytest.raises(ConnectionFailed, match="line 12.*RowScanDepth"):
        await read_csv(tmp_path, "late", ";RowScanDepth=5")
    columns, rows = await read_csv(tmp_path, "late", ";RowScanDepth=50")
    assert columns[0].canonical == T.TEXT and rows[-1] == ("oops",)


async def test_filters_apply_to_csv_rows(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("id,updated\n1,2024-01-01 00:00:00\n2,2024-02-01 00:00:00\n3,\n")
    _, rows = await read_csv(tmp_path, "f", where=[("updated", ">=", "2024-01-15")])
    assert rows == [(2, dt.datetime(2024, 2, 1))]
    _, rows = await read_csv(tmp_path, "f", columns=["id"], where=[("updated", "=", None)])
    assert rows == [(3,)]


async def test_a_missing_folder(tmp_path: Path) -> None:
    connector = open_connector("CSV", f"URI={tmp_path / 'nowhere'}")
    with pytest.raises(ConnectionFailed, match="does not exist"):
        await connector.test()
    await connector.close()


async def test_csv_cannot_run_sql(tmp_path: Path) -> None:
    async with open_connector("CSV", f"URI={tmp_path}") as connector:
        with pytest.raises(BadRequest):
            await connector.read("SELECT * FROM t")


@pytest.mark.parametrize(("samples", "expected"), [
    ([], T.TEXT), (["", ""], T.TEXT), (["1", "-7"], T.INT64), (["1", "2.25"], T.decimal(18, 2)),
    (["99999999999999999999"], T.decimal(20, 0)), (["1e5", "2"], T.FLOAT64), (["TRUE", "false"], T.BOOLEAN),
    (["0", "1"], T.INT64), (["007"], T.TEXT), (["2024-02-30"], T.TEXT), (["2024-01-01", "2024-01-01 10:00"], T.TIMESTAMP),
    (["{not json"], T.TEXT), (["abc", "1"], T.TEXT),
])
def test_detection(samples: list[str], expected: T.CanonicalType) -> None:
    assert detect(samples) == expected


async def test_writing_keeps_a_files_encoding(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes("id,name\n1,José\n".encode("latin-1"))
    (tmp_path / "bom.csv").write_bytes("\ufeffid,name\n1,Zoë\n".encode())
    async with open_connector("CSV", f"URI={tmp_path}") as connector:
        await connector.write_batch("latin", ["id", "name"], [(2, "Müller")])
        await connector.upsert_batch("bom", ["id", "name"], [(1, "Zoé"), (2, "Åsa")], ["id"])
    assert (tmp_path / "latin.csv").read_bytes().decode("latin-1").splitlines() == ["id,name", "1,José", "2,Müller"]
    data = (tmp_path / "bom.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and data.count(b"\xef\xbb\xbf") == 1
    _, rows = await read_csv(tmp_path, "bom")
    assert rows == [(1, "Zoé"), (2, "Åsa")]
