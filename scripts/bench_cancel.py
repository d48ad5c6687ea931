"""How fast a non-graceful CancelJob stops a running 1,000,000-row load (target: CANCELLED within 2 s).

Runs a real server (``python -m odata_sync serve``) on a temp data dir, a SQLite → SQLite job over a generated
``orders`` table, waits until the load is under way, sends ``CancelJob`` with ``Graceful: false`` and prints the time
until GetJobStatus shows the run ended CANCELLED, and the destination's row count: whole commits only (SQLite to
SQLite goes through the pass-through copy, which commits max(BatchSize, passthrough.MIN_CHUNK_ROWS) rows at a time).

    python scripts/bench_cancel.py [--rows 1000000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import Server

from odata_sync.connectors.passthrough import MIN_CHUNK_ROWS

TOKEN = "bench-cancel-token-0123456789ab"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cancel-") as tmp:
        tmp_path = Path(tmp)
        source, destination = tmp_path / "source.db", tmp_path / "destination.db"
        db = sqlite3.connect(source)
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, note TEXT)")
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                       ((i, f"customer {i % 997}", i * 0.25, "x" * 40) for i in range(args.rows)))
        db.commit()
        db.close()
        with Server(tmp_path / "data", TOKEN, python=sys.executable) as server:
            def call(path: str, body: dict | None = None) -> dict:
                request = urllib.request.Request(
                    f"{server.root}{path}", data=None if body is None else json.dumps(body).encode(),
                    method="GET" if body is None else "POST",
                    headers={"x-cdata-authtoken": TOKEN, "Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=120) as response:
                    return json.loads(response.read())

            for name, path in (("src", source), ("dst", destination)):
                call("Connections", {"Name": name, "ProviderName": "SQLite", "ConnectionString": f"Database={path}"})
            call("Jobs", {"JobName": "big", "Source": "src", "Destination": "dst", "BatchSize": args.batch,
                          "Query#1": "REPLICATE [orders]"})
            call("ExecuteJob", {"JobName": "big", "Async": True})
            while True:
                status = call("GetJobStatus", {"JobName": "big"})
                if status["Status"] == "RUNNING" and status["Progress"] >= 20:
                    break
                time.sleep(0.02)
            started = time.perf_counter()
            call("CancelJob", {"JobName": "big", "Graceful": False})
            while call("GetJobStatus", {"JobName": "big"})["Status"] != "IDLE":
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            run = call("History")["value"][0]
            rows = sqlite3.connect(destination).execute("SELECT count(*) FROM orders").fetchone()[0]
            commit = max(args.batch, MIN_CHUNK_ROWS)
            print(f"rows {args.rows:,}, batch {args.batch:,} (commits of {commit:,}): cancelled at "
                  f"{status['Progress']}% -> run {run['Status']} after {elapsed:.2f} s (target <= 2 s: "
                  f"{'met' if elapsed <= 2 else 'MISSED'}); destination holds {rows:,} rows "
                  f"({'whole commits' if rows % commit == 0 else 'PARTIAL'})")
            return 0 if run["Status"] == "CANCELLED" else 1


if __name__ == "__main__":
    raise SystemExit(main())
