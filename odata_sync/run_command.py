"""``odata-sync run JOB [--force-full]``: run one job now, in this process, with a progress bar.

It reads the job, its tasks (in Index order) and its two connections from the metadata store, opens the
connectors, runs the replication engine and prints a summary. Ctrl-C once stops after the batch being written
(CancelJob's graceful mode); twice stops at once (the transaction in flight is rolled back). Exit codes: 0 success,
1 a task failed, 2 the job cannot be run (unknown job or connection, unreadable secret), 130 cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from odata_sync.config import Config
from odata_sync.connectors import Connector, open_connector
from odata_sync.errors import ODataSyncError
from odata_sync.replication import (
    BatchCommitted,
    JobSettings,
    RunFinished,
    TaskFinished,
    TaskSettings,
    TaskStage,
    TaskStarted,
    TaskWarning,
    run_job,
)

EXIT_OK, EXIT_FAILED, EXIT_UNRUNNABLE, EXIT_CANCELLED = 0, 1, 2, 130


class _RowsColumn(ProgressColumn):
    """``12,345 / 100,000 rows`` (the estimate is the source's own, so the bar may end before or after it)."""

    def render(self, task: Task) -> Text:
        total = f" / {int(task.total):,}" if task.total else ""
        return Text(f"{int(task.completed):,}{total} rows", style="progress.download")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed")


async def _load(config: Config, job_name: str) -> tuple[dict, list[dict], dict[str, tuple[str, str]]]:
    """The job row, its task rows by Index, and name -> (provider, plain connection string) of its connections."""
    from odata_sync.edm.model import default_model
    from odata_sync.service.secrets import SecretBox, load_key
    from odata_sync.store import create_store
    from odata_sync.store.migrate import up_to_date, upgrade

    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = create_store(config.store_url, default_model())
    try:
        if not await up_to_date(store):
            await upgrade(store)
        box = SecretBox(load_key(config.data_dir, config.secret_key))
        jobs, tasks, connections = store.table("Jobs"), store.table("Tasks"), store.table("Connections")
        async with store.engine.connect() as conn:
            job = (await conn.execute(sa.select(jobs).where(jobs.c.JobName == job_name))).mappings().first()
            if job is None:
                raise LookupError(f"no job named {job_name!r}")
            task_rows = (await conn.execute(sa.select(tasks).where(tasks.c.JobName == job_name)
                                            .order_by(tasks.c.Index, tasks.c.TaskId))).mappings().all()
            names = [job["Source"], job["Destination"]]
            found = (await conn.execute(sa.select(connections).where(connections.c.Name.in_(names)))).mappings().all()
        plain = {row["Name"]: (row["ProviderName"], box.decrypt(row["ConnectionString"]) or "")
                 for row in found}
        for name in names:
            if name not in plain:
                raise LookupError(f"job {job_name!r} names connection {name!r}, which does not exist")
        return dict(job), [dict(row) for row in task_rows], plain
    finally:
        await store.close()


def _summary(finished: RunFinished, job_name: str) -> Table:
    table = Table(title=escape(f"{job_name}: {finished.status}"), title_justify="left")
    for heading in ("#", "Table", "Status", "Type", "Inserted", "Updated", "Deleted", "Failed", "Time"):
        table.add_column(heading, justify="right" if heading in ("#", "Inserted", "Updated", "Deleted", "Failed",
                                                                 "Time") else "left")
    styles = {"SUCCESS": "green", "FAILED": "red", "CANCELLED": "yellow"}
    for task in finished.tasks:
        table.add_row(str(task.index), Text(task.table), Text(task.status, style=styles.get(task.status, "")),
                      task.sync_type, f"{task.inserted:,}", f"{task.updated:,}", f"{task.deleted:,}",
                      f"{task.failed:,}", f"{task.runtime_ms / 1000:.1f} s")
    return table


async def run_job_from_store(config: Config, job_name: str, force_full: bool = False, *,
                             console: Console | None = None) -> int:
    """Run ``job_name`` from the metadata store now; returns the process exit code."""
    console = console or Console()
    try:
        job_row, task_rows, plain = await _load(config, job_name)
        job = JobSettings.from_row(job_row)
        tasks = [TaskSettings.from_row(row) for row in task_rows]
    except LookupError as exc:
        console.print(f"[red]odata-sync run: {escape(exc.args[0])}[/red]")
        return EXIT_UNRUNNABLE
    except ODataSyncError as exc:
        console.print(f"[red]odata-sync run: {escape(exc.message)}[/red]")
        return EXIT_UNRUNNABLE
    if not tasks:
        console.print(escape(f"job {job_name!r} has no tasks: nothing to do"))
        return EXIT_OK
    if str(job_row.get("Status") or "IDLE").upper() not in ("IDLE", ""):
        console.print(f"[yellow]note: the store says job {escape(repr(job_name))} is {job_row['Status']}[/yellow]")
    timeout = job.command_timeout or 30
    source = open_connector(*plain[job_row["Source"]], timeout=timeout)
    destination = open_connector(*plain[job_row["Destination"]], timeout=timeout)
    try:
        return await _run(job, tasks, source, destination, force_full, console)
    finally:
        await source.close()
        await destination.close()


async def _run(job: JobSettings, tasks: list[TaskSettings], source: Connector, destination: Connector,
               force_full: bool, console: Console) -> int:
    cancel = asyncio.Event()
    runner = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if cancel.is_set() and runner is not None:
            runner.cancel()  # second Ctrl-C: stop now, the transaction in flight rolls back
            return
        cancel.set()
        console.print("[yellow]stopping after the batch being written (Ctrl-C again to stop at once)[/yellow]")

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupt)
    finished: RunFinished | None = None
    bars: dict[int, TaskID] = {}
    started = time.monotonic()
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), _RowsColumn(), _RateColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            async for event in run_job(job, tasks, source, destination, force_full=force_full, cancel=cancel):
                _show(progress, bars, event)
                if isinstance(event, RunFinished):
                    finished = event
    except asyncio.CancelledError:
        console.print("[yellow]cancelled[/yellow]")
        return EXIT_CANCELLED
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    assert finished is not None
    console.print(_summary(finished, job.job_name))
    seconds = time.monotonic() - started
    rows = sum(t.rows_read for t in finished.tasks)
    console.print(f"{finished.status}: {finished.affected:,} records affected ({finished.inserted:,} inserted, "
                  f"{finished.updated:,} updated, {finished.deleted:,} deleted), {rows:,} rows read in "
                  f"{seconds:.1f} s ({rows / seconds if seconds else 0:,.0f} rows/s)")
    return {"SUCCESS": EXIT_OK, "CANCELLED": EXIT_CANCELLED}.get(finished.status, EXIT_FAILED)


def _show(progress: Progress, bars: dict[int, TaskID], event: Any) -> None:
    if isinstance(event, TaskStarted):
        bars[event.index] = progress.add_task(escape(f"{event.index}. {event.table} ({event.mode})"),
                                              total=event.estimated_rows)
        progress.console.print(f"[dim]{event.index}. {escape(event.query)} → {escape(event.table)}: "
                               f"{escape(event.reason)}[/dim]")
    elif isinstance(event, BatchCommitted):
        progress.update(bars[event.index], completed=event.rows_done)
    elif isinstance(event, TaskStage):
        progress.console.print(f"[dim]{event.index}. {escape(event.stage)}[/dim]")
    elif isinstance(event, TaskWarning):
        progress.console.print(f"[yellow]{event.index}. warning: {escape(event.message)}[/yellow]")
    elif isinstance(event, TaskFinished):
        bar = bars.get(event.index)
        if bar is not None:
            progress.update(bar, total=event.rows_read or 1, completed=event.rows_read or 1)
            progress.stop_task(bar)
        if event.error:
            progress.console.print(f"[red]{event.index}. {event.status}: {escape(event.error)}[/red]")

