"""How fast a non-graceful CancelJob stops a running 1,000,000-row load (target: CANCELLED within 2 s).

Runs a real server (``python -m odata_sync serve``) on a temp data dir, a SQLite → SQLite job over a generated
``orders`` table, waits until the load is under way, sends ``CancelJob`` with ``Graceful: false`` and prints the time
until GetJobStatus shows the run ended CANCELLED, and the destination's row count (whole batches only).

    python scripts/bench_cancel.py [--rows 1000000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOKEN = "bench-cancel-token-0123456789ab"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        port = free_port()
        env = {**os.environ, "ODATA_SYNC_ADMIN_TOKEN": TOKEN}
        server = subprocess.Popen([sys.executable, "-m", "odata_sync", "serve", "--data-dir", str(tmp_path / "data"),
                                   "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        try:
            while "listening" not in (server.stdout.readline() or "listening"):
                pass

            def call(path: str, body: dict | None = None) -> dict:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api.rsc/{path}", data=None if body is None else json.dumps(body).encode(),
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
            print(f"rows {args.rows:,}, batch {args.batch:,}: cancelled at {status['Progress']}% -> "
                  f"run {run['Status']} after {elapsed:.2f} s (target <= 2 s: {'met' if elapsed <= 2 else 'MISSED'}); "
                  f"destination holds {rows:,} rows ({'whole batches' if rows % args.batch == 0 else 'PARTIAL'})")
            return 0 if run["Status"] == "CANCELLED" else 1
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
