"""SQLite's allocation statistics turned off for the process, so that SQLite works on several threads at once.

SQLite counts every allocation under one process-wide mutex (``SQLITE_CONFIG_MEMSTATUS``, on unless built without).
Two threads rendering rows for a copy then take turns at that mutex instead of running side by side: with it, two
threads rendering COPY text were no faster than one; without it, about twice as fast (SQLite -> PostgreSQL full loads
went from 3.7x to 5.1x dlt in ``scripts/bench_sync.py``). SQLite recommends building without it; Python's module is
built with it, and SQLite lets it be changed only while it holds nothing, so this runs when the process starts,
before any database is opened. Only the statistics functions (``sqlite3_memory_used``, soft heap limits) stop
working; nothing here uses them.
"""

from __future__ import annotations

import ctypes

_CONFIG_MEMSTATUS = 9
_stopped = False  # (once off, SQLite reports no memory in use even with connections open: never shut it down again)


def stop_counting_allocations() -> bool:
    """Turn the statistics off when SQLite holds no memory (no connection is open); whether they are now off."""
    global _stopped
    if _stopped:
        return True
    try:
        import _sqlite3

        library = ctypes.CDLL(_sqlite3.__file__)  # the SQLite the sqlite3 module uses, however it is linked
        used = library.sqlite3_memory_used
        used.restype = ctypes.c_int64
        if used() != 0:  # something holds SQLite objects: shutting SQLite down now would pull them away
            return False
        if library.sqlite3_shutdown() != 0:
            return False
        _stopped = library.sqlite3_config(_CONFIG_MEMSTATUS, ctypes.c_int(0)) == 0
        if library.sqlite3_initialize() != 0:
            raise RuntimeError("SQLite did not start again")
        return _stopped
    except (ImportError, OSError, AttributeError):  # no sqlite3 module, or one whose SQLite is out of reach
        return False
