"""The background executor: a run queue in the store (History rows), workers in the server process with leases and
recovery, cancellation, the run log, and the job actions (ExecuteJob, ExecuteQuery, CancelJob, GetJobStatus,
GetJobLog)."""

from odata_sync.executor.worker import Executor

__all__ = ["Executor"]
