"""Large tables move in bounded batches, both ways."""

from __future__ import annotations

import decimal

import pytest

from odata_sync.connectors import ColumnInfo
from odata_sync.connectors import types as T

from .conftest import DESTINATIONS, table_name

ROWS = 200_000
BATCH = 10_000


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_reading_200000_rows_in_batches_of_10000(provider: str, connect) -> None:
    connector = await connect(provider)
    table = table_name("big")
    columns = [ColumnInfo.of("id", T.INT64, primary_key=True), ColumnInfo.of("label", T.string(20)),
               ColumnInfo.of("amount", T.decimal(12, 2))]
    await connector.create_table(table, columns, ["id"])
    cents = decimal.Decimal("0.01")
    for start in range(0, ROWS, BATCH):
        rows = [(i, f"row {i}", i * cents) for i in range(start, start + BATCH)]
        await connector.write_batch(table, ["id", "label", "amount"], rows)

    _, batches = await connector.read(table, BATCH)
    sizes, total, checksum = [], 0, 0
    async for batch in batches:
        sizes.append(len(batch))
        total += len(batch)
        checksum += sum(row[0] for row in batch)
        assert type(batch) is list and type(batch[0]) is tuple
    assert sizes == [BATCH] * (ROWS // BATCH)
    assert total == ROWS and checksum == ROWS * (ROWS - 1) // 2
    estimate = await connector.estimate_rows(table)
    assert estimate is not None and estimate >= 0


@pytest.mark.parametrize("provider", DESTINATIONS)
async def test_an_abandoned_read_releases_the_connection(provider: str, connect) -> None:
    connector = await connect(provider)
    table = table_name("partial")
    await connector.create_table(table, [ColumnInfo.of("id", T.INT64, primary_key=True)], ["id"])
    await connector.write_batch(table, ["id"], [(i,) for i in range(5000)])
    _, batches = await connector.read(table, 100)
    first = await anext(batches)
    assert len(first) == 100
    await batches.aclose()
    await connector.write_batch(table, ["id"], [(99_999,)])
    assert await connector.estimate_rows(table) >= 0
