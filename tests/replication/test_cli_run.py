"""Running a stored job from the command line, as a user does: a real subprocess against a real store."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from odata_sync.app import build_app, create_runtime
from odata_sync.config import Config
from tests.replication import source as orders

TOKEN = "replication-cli-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]
N = 5_000


def _cli_has_run() -> bool:
    from odata_sync.cli import _parser

    subcommands = next(a for a in _parser()._actions if a.dest == "command")
    return "run" in subcommands.choices


def _run(data_dir: Path, job: str, *, force_full: bool = False) -> subprocess.CompletedProcess:
    """``odata-sync run JOB`` once the command is wired; until then the same function through ``python -c``."""
    if _cli_has_run():
        command = [sys.executable, "-m", "odata_sync", "run", job, "--data-dir", str(data_dir)]
        command += ["--force-full"] if force_full else []
    else:
        command = [sys.executable, "-c",
                   "import asyncio, sys; from pathlib import Path; from odata_sync.config import Config; "
                   "from odata_sync.run_command import run_job_from_store; "
                   "sys.exit(asyncio.run(run_job_from_store(Config(data_dir=Path(sys.argv[1])), sys.argv[2], "
                   "sys.argv[3] == '1')))", str(data_dir), job, "1" if force_full else "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODATA_SYNC_")}
    env["COLUMNS"] = "160"
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
async def stored_jobs(tmp_path, aiohttp_client):
    """A store (in tmp_path/data) holding connections to a SQLite source and destination and three jobs."""
    data = tmp_path / "data"
    source, destination = tmp_path / "src.db", tmp_path / "dst.db"
    orders.make_sqlite(source, N)
    runtime = await create_runtime(Config(data_dir=data, admin_token=TOKEN))
    client = await aiohttp_client(build_app(runtime))
    headers = {"x-cdata-authtoken": TOKEN}
    for name, path in (("src", source), ("dst", destination)):
        response = await client.post("/api.rsc/Connections", headers=headers, json={
            "Name": name, "ProviderName": "SQLite", "ConnectionString": f"Database={path}"})
        assert response.status == 201, await response.text()
    for body in ({"JobName": "nightly", "Query#1": "REPLICATE [orders]", "BatchSize": 1000},
                 {"JobName": "broken", "Query#1": "REPLICATE [missing]", "Query#2": "REPLICATE [orders]"}):
        response = await client.post("/api.rsc/Jobs", headers=headers, json={"Source": "src", "Destination": "dst",
                                                                            **body})
        assert response.status == 201, await response.text()
    await client.close()
    return data, source, destination


def test_run_a_stored_job(stored_jobs):
    data, source, destination = stored_jobs
    first = _run(data, "nightly")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "SUCCESS" in first.stdout and f"{N:,} records affected ({N:,} inserted" in first.stdout
    assert "first run: the table is created and loaded" in first.stdout
    con = sqlite3.connect(destination)
    assert con.execute("SELECT count(*) FROM orders").fetchone()[0] == N
    con.close()

    orders.change_sqlite(source, N)
    second = _run(data, "nightly")
    assert second.returncode == 0, second.stdout + second.stderr
    updated, inserted, deleted = orders.change_counts(N)
    affected = updated + inserted - 1 + deleted
    assert "incremental" in second.stdout and f"{affected:,} records affected" in second.stdout

    forced = _run(data, "nightly", force_full=True)
    assert forced.returncode == 0 and "ForceFullSync" in forced.stdout and "0 records affected" in forced.stdout


def test_run_reports_failures_and_unknown_jobs(stored_jobs):
    data, _source, _destination = stored_jobs
    broken = _run(data, "broken")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAILED" in broken.stdout and "missing" in broken.stdout and "SUCCESS" in broken.stdout  # the 2nd ran
    unknown = _run(data, "no-such-job")
    assert unknown.returncode == 2 and "no job named 'no-such-job'" in unknown.stdout
