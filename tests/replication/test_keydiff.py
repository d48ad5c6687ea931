"""Deleted rows found by comparing every key with numpy (connectors.keydiff) for PostgreSQL → PostgreSQL, in one
slice or several, read in the snapshot the changed rows are staged in; and the fallback for other keys."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from odata_sync.connectors import CanonicalType, ColumnInfo, keydiff
from odata_sync.replication import SUCCESS, TaskStarted
from tests.databases import pg_execute, pg_fetch
from tests.replication.checksum import checksum
from tests.replication.conftest import make_place, replicate

PAIR = [("PostgreSQL", "PostgreSQL")]


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """What each key comparison found: the destination's keys the source lacks."""
    seen: list[list[int]] = []
    original = keydiff.KeyDiff.missing

    async def recording(self: keydiff.KeyDiff):
        result = await original(self)
        seen.append(result.tolist())
        return result
    monkeypatch.setattr(keydiff.KeyDiff, "missing", recording)
    return seen


@pytest.mark.parametrize("source, destination", PAIR)
@pytest.mark.parametrize("shape", ["spread", "mass-delete", "sliced"])
async def test_deletes_found_by_comparing_keys(places, compared, monkeypatch, source, destination, shape):
    """Keys far apart (negative, zero, 2**40 and up); deletes spread out, a mass delete, and slices of the key range
    compared one at a time (as for a table of more than SLICE_KEYS keys)."""
    src_place, dst_place = places
    await pg_execute(src_place.location, """
        CREATE TABLE items (id bigint PRIMARY KEY, v text, updated_at timestamp NOT NULL DEFAULT '2024-01-01');
        INSERT INTO items (id, v) SELECT g, 'v' || g FROM generate_series(-500, 5000) g;
        INSERT INTO items (id, v) SELECT (1::bigint << 40) + g * 977, 'far' || g FROM generate_series(1, 3000) g;""")
    if shape == "sliced":
        monkeypatch.setattr(keydiff, "SLICE_KEYS", 1000)
    src, dst = src_place.connector(), dst_place.connector()
    try:
        first = await replicate(src, dst, "REPLICATE [items]")
        assert first.task.status == SUCCESS, first.task.error
        doomed = ("id BETWEEN 0 AND 2999" if shape == "mass-delete" else
                  "id % 97 = 5 OR id = -500 OR id = (1::bigint << 40) + 977 OR id = (1::bigint << 40) + 3000 * 977")
        gone = sorted(r[0] for r in await pg_fetch(src_place.location, f"SELECT id FROM items WHERE {doomed}"))
        await pg_execute(src_place.location, f"DELETE FROM items WHERE {doomed}; "
                                             "UPDATE items SET v = 'new', updated_at = '2030-01-01' WHERE id % 50 = 1")
        expected = await checksum(src, "items", ["id", "v"])
        second = await replicate(src, dst, "REPLICATE [items]")
        assert second.task.status == SUCCESS, second.task.error
        assert second.of(TaskStarted)[0].mode == "incremental"
        assert await checksum(dst, "items", ["id", "v"]) == expected
        assert compared == [gone]
        assert second.task.deleted == len(gone) == 8_501 - expected[0]
    finally:
        await src.close()
        await dst.close()


def test_slices_cover_the_key_range_once(monkeypatch):
    monkeypatch.setattr(keydiff, "SLICE_KEYS", 10)
    assert keydiff._slices(5, None) == [None]
    for low, high, rows in [(-7, 93, 35), (0, 0, 11), (5, 2**40, 95), (1, 30, 30)]:
        slices = keydiff._slices(rows, (low, high))
        assert slices[0][0] == low and slices[-1][1] == high
        assert all(a[1] + 1 == b[0] for a, b in zip(slices, slices[1:], strict=False))
        assert len(slices) <= -(-rows // 10)  # (fewer when the range is narrower)


async def test_source_keys_are_read_in_the_exported_snapshot(pg_source_url, pg_destination_url, tmp_path):
    """The caller reads in the comparison's snapshot: a row deleted after the export is still there for that read
    and for the comparison, and the snapshot stays importable until the caller's read is over."""
    for url in (pg_source_url, pg_destination_url):
        await pg_execute(url, "CREATE TABLE k (id integer PRIMARY KEY); INSERT INTO k SELECT generate_series(1, 100)")
    await pg_execute(pg_source_url, "DELETE FROM k WHERE id IN (5, 50)")
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst = make_place("PostgreSQL", tmp_path, pg_destination_url).connector()
    key = ColumnInfo("id", "integer", CanonicalType("int32"), nullable=False, primary_key=True)
    comparing = keydiff.KeyDiff.start(src, dst, keydiff.KeyComparison("k", None, key, "k", None, key))
    assert comparing is not None
    try:
        snapshot = await comparing.snapshot()
        assert snapshot
        await pg_execute(pg_source_url, "DELETE FROM k WHERE id = 7")
        reader = await asyncpg.connect(pg_source_url)
        try:
            async with reader.transaction(isolation="repeatable_read", readonly=True):
                await reader.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                assert await reader.fetchval("SELECT count(*) FROM k") == 98  # 7 is still there
        finally:
            await reader.close()
        comparing.read_began()
        assert (await comparing.missing()).tolist() == [5, 50]
    finally:
        await comparing.abandon()
        await src.close()
        await dst.close()


async def test_other_key_types_compare_every_key(pg_source_url, pg_destination_url, tmp_path, compared):
    await pg_execute(pg_source_url, "CREATE TABLE codes (code text PRIMARY KEY, updated_at timestamp NOT NULL); "
                                    "INSERT INTO codes SELECT 'c' || g, '2024-01-01' FROM generate_series(1, 300) g")
    src = make_place("PostgreSQL", tmp_path, pg_source_url).connector()
    dst = make_place("PostgreSQL", tmp_path, pg_destination_url).connector()
    try:
        assert (await replicate(src, dst, "REPLICATE [codes]")).task.status == SUCCESS
        await pg_execute(pg_source_url, "DELETE FROM codes WHERE code LIKE 'c1%'")
        second = await replicate(src, dst, "REPLICATE [codes]")
        assert second.task.status == SUCCESS and second.task.deleted == 111
        assert compared == []  # (no comparison by keydiff: the scratch-table anti-join)
        assert await checksum(dst, "codes", ["code"]) == await checksum(src, "codes", ["code"])
    finally:
        await src.close()
        await dst.close()


@pytest.mark.parametrize("shape", ["dense", "sparse", "extremes", "empty"])
def test_key_set_finds_exactly_the_keys_it_lacks(shape):
    """Looked up in a table of flags (a dense range) or a sorted copy (keys far apart), with keys outside the set's
    range on both sides, down to the 64-bit extremes, and an empty set."""
    rng = np.random.default_rng(11)
    low, high = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    if shape == "dense":
        theirs = rng.permutation(np.arange(-1000, 200_000, dtype=np.int64))[:150_000]
        ours = np.concatenate([np.arange(-2000, 210_000, dtype=np.int64), [low, high]])
    elif shape == "sparse":
        theirs = rng.integers(low, high, 5000, dtype=np.int64)
        ours = np.concatenate([theirs[::3], rng.integers(low, high, 3000, dtype=np.int64), [low, high]])
    elif shape == "extremes":
        theirs = np.array([low, -1, 0, 1, high], dtype=np.int64)
        ours = np.array([low, low + 1, -1, 2, high - 1, high], dtype=np.int64)
    else:
        theirs, ours = np.empty(0, dtype=np.int64), np.array([low, 0, high], dtype=np.int64)
    expected = sorted(set(ours.tolist()) - set(theirs.tolist()))
    found = keydiff.KeySet(theirs).lacking(ours)  # (both arrays are the comparison's to change)
    assert sorted(found.tolist()) == expected
