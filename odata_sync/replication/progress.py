"""The events a run yields, in order: RunStarted, then per task TaskStarted, TaskStage/TaskWarning/BatchCommitted…,
TaskFinished, and finally RunFinished. They are plain frozen data, for a command line to show or an executor to
persist (History, TaskHistory, GetJobStatus, the job log)."""

from __future__ import annotations

from dataclasses import dataclass

SUCCESS, FAILED, CANCELLED = "SUCCESS", "FAILED", "CANCELLED"
FULL, INCREMENTAL = "full", "incremental"


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    job_name: str
    tasks: int
    force_full: bool


@dataclass(frozen=True)
class TaskStarted:
    task_id: int | None
    index: int
    query: str
    table: str  # the destination table, schema-qualified when a schema is set
    sync_type: str  # full | incremental
    mode: str  # load | reconcile | incremental | windowed | refresh (see planner.Mode)
    reason: str  # why this mode, for the log
    estimated_rows: int | None


@dataclass(frozen=True)
class TaskStage:
    """A task moved to another stage (``reading changes``, ``comparing keys``, ``swapping in the new table``…)."""

    task_id: int | None
    index: int
    stage: str


@dataclass(frozen=True)
class TaskWarning:
    task_id: int | None
    index: int
    message: str


@dataclass(frozen=True)
class BatchCommitted:
    """A batch (or, in windowed loads, a window) is committed together with its checkpoint. Counts are the task's
    running totals; ``rows_done`` counts rows read from the source so far, ``estimated_rows`` is None when unknown."""

    task_id: int | None
    index: int
    rows: int
    rows_done: int
    estimated_rows: int | None
    inserted: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class TaskFinished:
    task_id: int | None
    index: int
    query: str
    table: str
    status: str  # SUCCESS | FAILED | CANCELLED
    sync_type: str
    rows_read: int
    inserted: int
    updated: int
    deleted: int
    failed: int
    runtime_ms: int
    error: str | None = None

    @property
    def affected(self) -> int:
        """RecordsAffected: rows inserted, updated or deleted in committed batches."""
        return self.inserted + self.updated + self.deleted


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    status: str  # SUCCESS | FAILED | CANCELLED
    tasks: tuple[TaskFinished, ...]
    runtime_ms: int

    @property
    def inserted(self) -> int:
        return sum(t.inserted for t in self.tasks)

    @property
    def updated(self) -> int:
        return sum(t.updated for t in self.tasks)

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tasks)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.tasks)

    @property
    def affected(self) -> int:
        return sum(t.affected for t in self.tasks)

    @property
    def sync_type(self) -> str:
        return INCREMENTAL if self.tasks and all(t.sync_type == INCREMENTAL for t in self.tasks) else FULL


Progress = RunStarted | TaskStarted | TaskStage | TaskWarning | BatchCommitted | TaskFinished | RunFinished
