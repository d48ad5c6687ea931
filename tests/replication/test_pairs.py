"""Full load, the bench's 1% change, incremental: the destination equals the source, for each pair of providers.
(OData as a source is in test_odata_source.py.)"""

from __future__ import annotations

import pytest

from odata_sync.replication import SUCCESS, TaskStarted
from tests.replication import source as orders
from tests.replication.checksum import checksum
from tests.replication.conftest import replicate

N = 20_000
PAIRS = [
    ("PostgreSQL", "PostgreSQL"),
    ("PostgreSQL", "SQLite"),
    ("SQLite", "PostgreSQL"),
    ("MySQL", "PostgreSQL"),
    ("PostgreSQL", "DuckDB"),
    ("CSV", "SQLite"),
    ("SQLite", "MySQL"),
    ("SQLite", "CSV"),
]


@pytest.mark.parametrize("source, destination", PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
async def test_full_then_incremental_converges(places, source, destination):
    src_place, dst_place = places
    await src_place.make_orders(N)
    src, dst = src_place.connector(), dst_place.connector()
    # a CSV file has no primary key: the statement declares it
    query = "REPLICATE [orders] (PRIMARY KEY (id))" if source == "CSV" else "REPLICATE [orders]"
    try:
        full = await replicate(src, dst, query)
        assert full.task.status == SUCCESS, full.task.error
        assert full.of(TaskStarted)[0].mode == "load"
        assert (full.task.inserted, full.task.updated, full.task.deleted) == (N, 0, 0)
        assert full.task.sync_type == "full"
        assert await checksum(src, "orders", orders.COLUMNS) == await checksum(dst, "orders", orders.COLUMNS)

        await src_place.change_orders(N)
        incremental = await replicate(src, dst, query)
        task = incremental.task
        assert task.status == SUCCESS, task.error
        assert incremental.of(TaskStarted)[0].mode == "incremental" and task.sync_type == "incremental"
        updated, inserted, deleted = orders.change_counts(N)
        assert (task.inserted, task.updated, task.deleted) == (inserted - 1, updated, deleted)  # one insert deleted
        assert task.affected == inserted - 1 + updated + deleted
        assert task.rows_read < N // 10  # only the changed rows (and the lookback's few) are read
        expected = await checksum(src, "orders", orders.COLUMNS)
        assert expected[0] == N + inserted - 1 - deleted
        assert await checksum(dst, "orders", orders.COLUMNS) == expected

        again = await replicate(src, dst, query)
        assert again.task.status == SUCCESS and again.task.affected == 0  # re-read by the lookback: not counted
        assert await checksum(dst, "orders", orders.COLUMNS) == expected
    finally:
        await src.close()
        await dst.close()
