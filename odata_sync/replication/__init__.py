"""Replication: the REPLICATE statement, job and task settings, and the engine that copies tables.

    from odata_sync.replication import JobSettings, TaskSettings, run_job

    job = JobSettings.from_row(jobs_row)
    tasks = [TaskSettings.from_row(row) for row in task_rows]
    async for event in run_job(job, tasks, source, destination):
        ...

Nothing here speaks HTTP or reads the metadata store: callers pass settings and open connectors, and persist the
progress events (``progress``). ``parse_replicate`` validates a task's query without any database.
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
