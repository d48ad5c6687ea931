"""Replication: the REPLICATE statement, job and task settings, and the engine that copies tables.

    from odata_sync.replication import JobSettings, TaskSettings, run_job

    job = JobSettings.from_row(jobs_row)                       # CData property names, any case
    tasks = [TaskSettings.from_row(row) for row in task_rows]
    async for event in run_job(job, tasks, source, destination, force_full=False, cancel=stop_event):
        ...                                                    # progress.* events, to show or persist

Nothing here speaks HTTP or reads the metadata store: callers pass settings and open connectors. ``parse_replicate``
validates a task's query without any database.

Modules, by reason to change: ``statement`` (the REPLICATE grammar), ``options`` (option names and values),
``settings`` (job/task settings and precedence), ``planner`` (which mode a run takes, windows, lookback), ``state``
(the checkpoint row in the destination), ``schema`` (creating and evolving the destination table), ``loader``
(read-ahead, key sets), ``dialect`` (the two SQL statements the connectors do not offer), ``engine`` (the modes),
``progress`` (the events).

Choices where the API leaves room:

- A run picks one mode per task (``planner.Mode``): LOAD (first run, DropTable, TruncateTableData, or an unfinished
  load: append into an empty table), RECONCILE (ForceFullSync, no check column, no state yet: upsert every row, then
  delete the keys the source lacks), INCREMENTAL (check >= mark - lookback, upsert, delete by key), WINDOWED
  (ReplicateStartDate [+ Interval]), REFRESH (no key at all: load a staging table and swap it in, even when there is a
  check column, since rows cannot be merged without a key). The key is the statement's PRIMARY KEY, else the
  source's, else the destination table's; ``REPLICATE [t] (PRIMARY KEY (id))`` gives a CSV file or a SELECT a key.
- The check column: IncrementalCheckColumns (first one present wins), else the first column named ``updated_at``,
  ``updated_on``, ``last_updated*``, ``last_modified*``, ``modified*``, ``date_modified``, ``changed_at`` or
  ``rowversion`` whose type grows (integer, decimal, date, timestamp, binary). Rows whose check value is NULL are
  copied by full loads and reconciles, not by incremental reads.
- The mark is the highest check value committed, stored at full precision in ``_odata_sync_state`` in the
  destination (in the table's schema), in the same transaction as the data. Incremental reads are ordered by the check
  column, so each batch's commit advances the mark; from a source that cannot sort (CSV) the mark moves only with the
  last commit. IncrementalLookback defaults to 5 seconds, applies to date/time check columns only (integer marks are
  read with ``>=`` as they are); rows it re-reads unchanged are neither written nor counted.
- Deletes: PostgreSQL → PostgreSQL with one integer key has both servers send every key as one bytea and compares
  them with numpy (``connectors.keydiff``, on connections of its own, while the changed rows are written; the source's
  keys are read in the snapshot the changed rows are staged in, or after the read of them began, so a key that read
  returned is never deleted unless the source lost it since); otherwise every source key is written to a
  scratch table on the destination and one anti-join DELETE removes the rest (memory stays bounded); a CSV
  destination keeps the keys in memory instead. SkipDeleted turns it off.
- A full load of a table between PostgreSQL and SQLite, in any direction, is a pass-through
  (``connectors.passthrough``): rows travel in the databases' own bulk formats and never become Python values of
  their types (each value stored exactly as the normal path stores it), and each chunk of max(BatchSize, 50,000)
  rows is committed on its own. A PostgreSQL destination table created by a load gets its primary key after the rows
  are in, in the final commit (a source with duplicate keys fails there; the next run loads again). An incremental
  PostgreSQL → PostgreSQL run copies its changed rows by binary COPY into a temporary table of the destination and
  merges them a batch per commit (each with its highest check value as the mark).
- PostgreSQL upserts use ``INSERT … ON CONFLICT`` when a unique index on the key exists (one index probe per row),
  else delete-changed-then-insert-missing. Batch commits need not wait for the disk (``synchronous_commit = off``):
  a crash may lose the latest batches, never part of one, and the run's final commit waits for all of them.
- A killed full load is redone from the start (its table emptied in the first batch's transaction); a killed
  reconcile is redone; a killed incremental or windowed run resumes from its committed mark.
- ReplicateStartDate also bounds reconciles (rows below it are never replicated); windows are ``[lo, lo+interval)``
  committed one per transaction, the last one open-ended; an empty window jumps to the window of the next value.
  Integer check columns get a single window from the start value.
- The destination table is ``TableNamePrefix + name`` in CacheSchema; ``REPLICATE [s].[T]`` reads ``s.T``, while
  ``REPLICATE [s].[D] SELECT …`` writes into schema ``s``. New source columns are added with AlterSchema and the
  run then becomes a reconcile so existing rows get their values; types are widened only where no value can be lost
  (ints, floats, string lengths, decimal digits; never on SQLite, whose declared types do not constrain).
- A swap refresh reports every loaded row as inserted. UseGmtDateTime is not used: instants travel as UTC-aware
  values end to end.
"""

from .engine import run_job
from .options import Options
from .planner import Mode, Plan
from .progress import (
    CANCELLED,
    FAILED,
    FULL,
    INCREMENTAL,
    SUCCESS,
    BatchCommitted,
    Progress,
    RunFinished,
    RunStarted,
    TaskFinished,
    TaskStage,
    TaskStarted,
    TaskWarning,
)
from .settings import DEFAULT_BATCH_SIZE, DEFAULT_LOOKBACK_SECONDS, JobSettings, Target, TaskOptions, TaskSettings
from .state import STATE_TABLE
from .statement import ColumnDefinition, ReplicateStatement, TableName, parse_replicate

__all__ = [
    "CANCELLED", "DEFAULT_BATCH_SIZE", "DEFAULT_LOOKBACK_SECONDS", "FAILED", "FULL", "INCREMENTAL", "STATE_TABLE",
    "SUCCESS", "BatchCommitted", "ColumnDefinition", "JobSettings", "Mode", "Options", "Plan", "Progress",
    "ReplicateStatement", "RunFinished", "RunStarted", "TableName", "Target", "TaskFinished", "TaskOptions",
    "TaskSettings", "TaskStage", "TaskStarted", "TaskWarning", "parse_replicate", "run_job",
]
