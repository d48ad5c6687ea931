"""Informational benchmark (not collected by pytest): a full load of the bench's ``orders`` table through the engine.

    python -m tests.replication.bench_full_load SRC_URL DST_URL [BATCH_SIZE] [incremental]

SRC_URL and DST_URL are ``postgresql://`` URLs (make the source with the bench's make_source.py). The destination
table is dropped first, so each run is a first (full) load; with ``incremental`` the existing copy is kept and the
run is incremental (apply the bench's change_source.sql to the source first). Prints rows/s and peak RSS.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time

import asyncpg

from odata_sync.connectors import open_connector
from odata_sync.replication import JobSettings, RunFinished, TaskSettings, run_job
from tests.connectors.conftest import server_connection_string


async def main(source_url: str, destination_url: str, batch_size: int, incremental: bool) -> None:
    if not incremental:
        conn = await asyncpg.connect(destination_url)
        await conn.execute("DROP TABLE IF EXISTS orders; DROP TABLE IF EXISTS _odata_sync_state")
        await conn.close()
    source = open_connector("PostgreSQL", server_connection_string(source_url), timeout=600)
    destination = open_connector("PostgreSQL", server_connection_string(destination_url), timeout=600)
    job = JobSettings.from_row({"JobName": "bench", "Source": "bench_src", "BatchSize": batch_size})
    started = time.monotonic()
    try:
        async for event in run_job(job, [TaskSettings("REPLICATE [orders]", 1, 1)], source, destination):
            if isinstance(event, RunFinished):
                finished = event
    finally:
        await source.close()
        await destination.close()
    seconds = time.monotonic() - started
    task = finished.tasks[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"odata-sync {task.sync_type} PG -> PG, batch {batch_size}: {task.rows_read:,} rows read, "
          f"{task.affected:,} affected ({task.inserted:,} ins, {task.updated:,} upd, {task.deleted:,} del) in "
          f"{seconds:.2f} s = {task.rows_read / seconds:,.0f} rows/s; peak RSS {peak:.0f} MB; {task.status}")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(main(arguments[0], arguments[1], int(arguments[2]) if len(arguments) > 2 else 10_000,
                     "incremental" in arguments[3:]))
