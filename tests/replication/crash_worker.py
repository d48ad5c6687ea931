"""A replication run in its own process, for the crash tests to SIGKILL: ``python -m tests.replication.crash_worker
SPEC.json``. SPEC names the source and destination (provider and connection string), the query, the job's settings
the pass-through's chunk size (``chunk_rows``, optional) and a progress file, to which one line is appended (and flushed) per event: ``batch <rows done>``, ``stage <what>``,
``finished <status>``. The test watches that file to kill the process at a chosen point."""

from __future__ import annotations

import asyncio
import json
import sys

from odata_sync.connectors import open_connector, passthrough
from odata_sync.replication import (
    BatchCommitted,
    JobSettings,
    RunFinished,
    TaskSettings,
    TaskStage,
    TaskStarted,
    run_job,
)


async def main(spec: dict) -> int:
    if "chunk_rows" in spec:  # pass-through loads commit chunks of this size (else at least 50,000 rows)
        passthrough.MIN_CHUNK_ROWS = spec["chunk_rows"]
    source = open_connector(*spec["source"])
    destination = open_connector(*spec["destination"])
    job = JobSettings.from_row({"JobName": "crash", "Source": "src", "Destination": "dst", **spec.get("job", {})})
    tasks = [TaskSettings(spec["query"], 1, 1)]
    status = "?"
    with open(spec["progress"], "a", buffering=1) as progress:
        try:
            async for event in run_job(job, tasks, source, destination, force_full=spec.get("force_full", False)):
                if isinstance(event, TaskStarted):
                    progress.write(f"started {event.mode}\n")
                elif isinstance(event, BatchCommitted):
                    progress.write(f"batch {event.rows_done}\n")
                elif isinstance(event, TaskStage):
                    progress.write(f"stage {event.stage}\n")
                elif isinstance(event, RunFinished):
                    status = event.status
                    error = event.tasks[0].error if event.tasks else None
                    progress.write(f"finished {status} {error or ''}\n")
        finally:
            await source.close()
            await destination.close()
    return 0 if status == "SUCCESS" else 1


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        sys.exit(asyncio.run(main(json.load(handle))))
