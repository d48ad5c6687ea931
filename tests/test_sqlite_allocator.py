"""SQLite's allocation statistics are turned off only while no database is open, once, and SQLite keeps working
(on several threads at once) afterwards. Each case runs in a fresh interpreter: the setting is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

OPENED_FIRST = """
    import sqlite3
    from odata_sync.sqlite_allocator import stop_counting_allocations
    held = sqlite3.connect(":memory:")
    held.execute("CREATE TABLE t (x)"); held.execute("INSERT INTO t VALUES (1)")
    print(stop_counting_allocations(), held.execute("SELECT x FROM t").fetchone()[0])
"""
AT_START = """
    import sqlite3, threading
    from odata_sync.sqlite_allocator import stop_counting_allocations
    first = stop_counting_allocations()
    held = sqlite3.connect(":memory:", check_same_thread=False)
    held.execute("CREATE TABLE t (x)"); held.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    again = stop_counting_allocations()  # (a connection is open now: SQLite must not be shut down under it)
    sums = []
    def work():
        conn = sqlite3.connect(":memory:")
        sums.append(conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
                                 "SELECT sum(length(printf('%d-%s', i, i))) FROM n").fetchone()[0])
    threads = [threading.Thread(target=work) for _ in range(2)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(first, again, held.execute("SELECT sum(x) FROM t").fetchone()[0], sums)
"""


@pytest.mark.parametrize("script, expected", [
    (OPENED_FIRST, "False 1"),
    (AT_START, "True True 499500 [1077790, 1077790]"),
], ids=["a-database-open-first", "at-start"])
def test_statistics_turned_off_only_before_any_database_is_open(script, expected):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
