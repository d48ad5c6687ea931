"""Deleted rows found from key-range summaries (connectors.keydiff) for PostgreSQL → PostgreSQL, and the fallback to
comparing every key."""

from __future__ import annotations

import asyncpg
import pytest

from odata_sync.connectors import keydiff
from odata_sync.replication import SUCCESS, TaskStarted
from tests.replication.checksum import checksum
from tests.replication.conftest import make_place, replicate

PAIR = [("PostgreSQL", "PostgreSQL")]


@pytest.fixture
def summaries(monkeypatch: pytest.MonkeyPatch) -> list:
    """What each summarised comparison returned (None: it fell back to comparing every key)."""
    seen: list = []
    original = keydiff.missing_keys

    async def recording(*args, **kwargs):
        result = await original(*args, **kwargs)
        seen.append(result)
        return result
    monkeypatch.setattr(keydiff, "missing_keys", recording)
    return seen


async def _run_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize("source, destination", PAIR)
@pytest.mark.parametrize("spread", [True, False], ids=["spread", "mass-delete"])
async def test_deletes_found_by_range_summaries(places, summaries, monkeypatch, source, destination, spread):
    """Keys far apart (negative, zero, 2**40 and up), deletes spread out or a mass delete (which falls back)."""
    src_place, dst_place = places
    await _run_sql(src_place.location, """
        CREATE TABLE items (id bigint PRIMARY KEY, v text, updated_at timestamp NOT NULL DEFAULT '2024-01-01');
        INSERT INTO items (id, v) SELECT g, 'v' || g FROM generate_series(-500, 5000) g;
        INSERT INTO items (id, v) SELECT (1::bigint << 40) + g * 977, 'far' || g FROM generate_series(1, 3000) g;""")
    if not spread:
        monkeypatch.setattr(keydiff, "MAX_FETCHED", 100)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        first = await replicate(src, dst, "REPLICATE [items]")
        assert first.task.status == SUCCESS, first.task.error
        doomed = "id % 97 = 5 OR id = -500 OR id = (1::bigint << 40) + 977" if spread else "id BETWEEN 0 AND 2999"
        await _run_sql(src_place.location, f"DELETE FROM items WHERE {doomed}; "
                                           "UPDATE items SET v = 'new', updated_at = '2030-01-01' WHERE id % 50 = 1")
        expected = await checksum(src, "items", ["id", "v"])
        second = await replicate(src, dst, "REPLICATE [items]")
        assert second.task.status == SUCCESS, second.task.error
        assert second.of(TaskStarted)[0].mode == "incremental"
        assert await checksum(dst, "items", ["id", "v"]) == expected
        assert second.task.deleted == 8_501 - expected[0]
        assert len(summaries) == 1
        if spread:
            assert summaries[0] is not None and len(summaries[0]) == second.task.deleted
        else:
            assert summaries[0] is None  # too many differing ranges: every key compared
    finally:
        await src.close()
        await dst.close()


async def test_other_key_types_compare_every_key(pg_source_url, pg_destination_url, tmp_path, summaries):
    await _run_sql(pg_source_url, "CREATE TABLE codes (code text PRIMARY KEY, updated_at timestamp NOT NULL); "
                                  "INSERT INTO codes SELECT 'c' || g, '2024-01-01' FROM generate_series(1, 300) g")
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst = make_place("PostgreSQL", tmp_path, pg_destination_url).connector()
    try:
        assert (await replicate(src, dst, "REPLICATE [codes]")).task.status == SUCCESS
        await _run_sql(pg_source_url, "DELETE FROM codes WHERE code LIKE 'c1%'")
        second = await replicate(src, dst, "REPLICATE [codes]")
        assert second.task.status == SUCCESS and second.task.deleted == 111
        assert summaries == [None]
        assert await checksum(dst, "codes", ["code"]) == await checksum(src, "codes", ["code"])
    finally:
        await src.close()
        await dst.close()
