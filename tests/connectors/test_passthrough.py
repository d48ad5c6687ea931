"""Values already canonical skip conversion: PostgreSQL reads pass decoded values through, and a write told the
incoming types (``canonical=``) converts only the columns whose type differs; a few PostgreSQL upserted rows bound
as parameters store what staged rows store."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

from odata_sync.connectors import ColumnInfo
from odata_sync.connectors import types as T
from odata_sync.connectors.values import passes_as_is, ready_positions

from .conftest import table_name


def test_passes_as_is_groups_kinds_by_canonical_python_value() -> None:
    assert passes_as_is(T.INT32, T.INT64) and passes_as_is(T.TEXT, T.JSON) and passes_as_is(T.TIMESTAMP, T.TIMESTAMP)
    assert not passes_as_is(T.TIMESTAMP, T.TIMESTAMPTZ) and not passes_as_is(T.INT64, T.decimal(12, 2))
    assert not passes_as_is(T.TEXT, T.TIMESTAMP) and not passes_as_is(None, T.TEXT)
    assert ready_positions([T.INT64, T.TEXT], [T.INT64, T.DATE]) == {0}
    assert ready_positions(None, [T.INT64]) == frozenset() and ready_positions([T.INT64], [T.INT64, T.TEXT]) == set()


async def test_postgresql_read_and_hinted_write_keep_canonical_values(connect, pg_url) -> None:
    pg = await connect("PostgreSQL")
    source, target = table_name(), table_name()
    await pg.execute(f"CREATE TABLE {source} (id bigint PRIMARY KEY, at timestamp(3), atz timestamptz, "
                     "amount numeric(12,2), u uuid, tz time with time zone, note varchar(10), flag boolean)")
    await pg.execute(f"INSERT INTO {source} VALUES (1, '2024-01-02 03:04:05.678', '2024-01-02 03:04:05+02', 12.5, "
                     "'12345678-1234-5678-1234-567812345678', '10:00:00+02', 'n', true), "
                     "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")
    columns, batches = await pg.read(source, order_by=["id"])
    rows = [row async for batch in batches for row in batch]
    first = rows[0]
    assert first[:4] == (1, dt.datetime(2024, 1, 2, 3, 4, 5, 678000), dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.UTC),
                         decimal.Decimal("12.50"))
    assert first[4] == uuid.UUID("12345678-1234-5678-1234-567812345678") and type(first) is tuple and rows[1][1:] == (None,) * 7
    await pg.create_table(target, [ColumnInfo.of("id", T.INT64, primary_key=True), ColumnInfo.of("at", T.TIMESTAMP),
                                   ColumnInfo.of("note", T.TEXT)], ["id"])
    # the hint covers "id" and "note"; "at" arrives as text and is still converted
    await pg.write_batch(target, ["id", "at", "note"], [(1, "2024-01-02T03:04:05Z", "x"), (2, None, None)],
                         canonical=[T.INT64, T.TEXT, T.TEXT])
    counts = await pg.upsert_batch(target, ["id", "at", "note"], [(2, first[1], "y")], ["id"],
                                   canonical=[c.canonical for c in columns[:2]] + [T.TEXT])
    assert (counts.inserted, counts.updated) == (0, 1)
    _cols, batches = await pg.read(target, order_by=["id"])
    assert [row async for batch in batches for row in batch] == [
        (1, dt.datetime(2024, 1, 2, 3, 4, 5), "x"), (2, dt.datetime(2024, 1, 2, 3, 4, 5, 678000), "y")]


async def test_postgresql_small_upserts_bound_as_parameters_store_what_staged_ones_store(connect, pg_url,
                                                                                        monkeypatch) -> None:
    """A few rows are bound as parameters instead of staged: same values stored, same counts, same refusals."""
    from odata_sync.connectors import postgresql

    pg = await connect("PostgreSQL")
    names = ["id", "note", "amount", "at", "atz", "data", "doc", "tags"]
    ddl = ("(id bigint PRIMARY KEY, note varchar(5), amount numeric(8,2), at timestamp(3), atz timestamptz, "
           "data bytea, doc jsonb, tags text)")
    rows = [(1, "abc", "1.005", "2024-01-02 03:04:05.6789", "2024-01-02T03:04:05+02:00", b"\x00\xff", '{"a": [1]}',
             None), (2, None, None, None, None, None, None, "x")]
    stored, outcomes = [], []
    for bound in (True, False):
        monkeypatch.setattr(postgresql, "_BOUND_ROWS", 16 if bound else 0)
        table = table_name()
        await pg.execute(f"CREATE TABLE {table} {ddl}")
        first = await pg.upsert_batch(table, names, rows, ["id"])
        again = await pg.upsert_batch(table, names, [rows[0], (2, "new", None, None, None, None, None, "x"),
                                                      (3, None, None, None, None, None, None, None)], ["id"])
        try:
            await pg.upsert_batch(table, names, [(4, "too long", None, None, None, None, None, None)], ["id"])
        except Exception as exc:  # noqa: BLE001 - the refusal itself is compared
            refused = str(exc)
        outcomes.append(((first.inserted, first.updated), (again.inserted, again.updated), refused))
        _columns, batches = await pg.read(table, order_by=["id"])
        stored.append([row async for batch in batches for row in batch])
    assert outcomes[0] == outcomes[1] and outcomes[0][:2] == ((2, 0), (1, 1)) and "too long" in outcomes[0][2]
    assert stored[0] == stored[1] and len(stored[0]) == 3
    assert stored[0][0][2] == decimal.Decimal("1.01") and stored[0][0][3] == dt.datetime(2024, 1, 2, 3, 4, 5, 679000)

