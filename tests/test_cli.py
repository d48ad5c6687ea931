"""The command line as a user runs it: real subprocesses of ``odata-sync``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

READY = "odata-sync listening on http://"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODATA_SYNC_")}
    env.update(extra)
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "odata_sync", *args]


class Server:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(_command("serve", "--data-dir", str(data_dir), "--port", str(self.port)),
                                        env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                return
        self.process.kill()
        raise AssertionError("server did not get ready:\n" + "\n".join(self.lines))

    def get(self, path: str, token: str) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api.rsc/{path}",
                                         headers={"x-cdata-authtoken": token})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        try:
            rest, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.lines += rest.splitlines()
        return self.process.returncode


def test_first_start_prints_the_admin_token_once_and_stops_cleanly(tmp_path):
    data = tmp_path / "data"
    server = Server(data)
    try:
        token_lines = [line for line in server.lines if "shown only this once" in line]
        assert len(token_lines) == 1
        token = token_lines[0].rsplit(" ", 1)[1]
        assert len(token) >= 20
        assert server.lines[-1] == f"odata-sync listening on http://127.0.0.1:{server.port}/api.rsc/"
        status, body = server.get("Jobs", token)
        assert status == 200 and b'"value":[]' in body
        assert server.get("Jobs", "wrong-token")[0] == 401
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert (data / "odata-sync.db").exists()
    assert oct((data / "secret.key").stat().st_mode & 0o777) == "0o600"

    again = Server(data)  # the store has users now: no new token is printed
    try:
        assert not any("shown only this once" in line for line in again.lines)
        assert again.get("Jobs", token)[0] == 200
    finally:
        assert again.stop(signal.SIGINT) == 0


def test_admin_token_and_password_from_the_environment(tmp_path):
    token = "env-token-0123456789abcdefgh"
    server = Server(tmp_path / "data", ODATA_SYNC_ADMIN_TOKEN=token, ODATA_SYNC_ADMIN_PASSWORD="Env-passw0rd!")
    try:
        assert not any("shown only this once" in line for line in server.lines)
        assert server.get("$metadata", token)[0] == 200
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/api.rsc/Jobs")
        import base64
        request.add_header("Authorization", "Basic " + base64.b64encode(b"admin:Env-passw0rd!").decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    finally:
        server.stop()


def test_migrate_and_reset_token(tmp_path):
    data = tmp_path / "data"
    result = subprocess.run(_command("migrate", "--data-dir", str(data)), env=_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "store at revision" in result.stdout
    server = Server(data, ODATA_SYNC_ADMIN_TOKEN="first-token-0123456789abcd")
    server.stop()
    reset = subprocess.run(_command("user", "reset-token", "admin", "--data-dir", str(data)), env=_env(),
                           capture_output=True, text=True, timeout=60)
    assert reset.returncode == 0, reset.stderr
    new_token = reset.stdout.strip().splitlines()[-1]
    server = Server(data)
    try:
        assert server.get("Jobs", new_token)[0] == 200
        assert server.get("Jobs", "first-token-0123456789abcd")[0] == 401
    finally:
        server.stop()
    missing = subprocess.run(_command("user", "reset-token", "nobody", "--data-dir", str(data)), env=_env(),
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no user named" in missing.stderr


def test_flags_win_over_environment(tmp_path):
    env_port = _free_port()
    server = Server(tmp_path / "data", ODATA_SYNC_PORT=str(env_port))  # --port (the flag) must win
    try:
        assert server.port != env_port
        assert server.lines[-1].endswith(f":{server.port}/api.rsc/")
    finally:
        server.stop()


def test_bad_role_is_refused(tmp_path):
    result = subprocess.run(_command("serve", "--data-dir", str(tmp_path)), env=_env(ODATA_SYNC_ROLE="boss"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "role must be" in result.stderr


@pytest.mark.parametrize("flag", ["--help"])
def test_help(flag):
    result = subprocess.run(_command(flag), env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "serve" in result.stdout and "migrate" in result.stdout


def test_sigterm_lets_in_flight_requests_finish(tmp_path):
    """A TestConnection against a host that accepts and never answers is in flight when SIGTERM arrives: it still
    gets its answer (Status Failed after CommandTimeout), then the server exits cleanly."""
    import json
    import threading

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    token = "term-token-0123456789abcdefgh"
    server = Server(tmp_path / "data", ODATA_SYNC_ADMIN_TOKEN=token)
    base = f"http://127.0.0.1:{server.port}/api.rsc/"

    def post(path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"x-cdata-authtoken": token, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())

    try:
        port = silent.getsockname()[1]
        assert post("Connections", {"Name": "silent", "ProviderName": "PostgreSQL",
                                    "ConnectionString": f"Server=127.0.0.1;Port={port};Database=x;User=u;"
                                                        "CommandTimeout=3"})[0] == 201
        answers: list = []
        thread = threading.Thread(target=lambda: answers.append(post("TestConnection", {"ConnectionName": "silent"})))
        thread.start()
        time.sleep(1.0)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=60)
        assert answers, "the in-flight request got no answer"
        status, body = answers[0]
        assert status == 200 and body["value"][0]["Status"] == "Failed"
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
    finally:
        if server.process.poll() is None:
            server.process.kill()
        silent.close()


def test_a_server_killed_mid_run_is_recovered_on_restart(tmp_path):
    """SIGKILL the server while a job runs; the restarted server marks the run FAILED (interrupted), the
    destination holds whole batches only, and the next run completes the copy."""
    import json
    import sqlite3

    source, destination = tmp_path / "source.db", tmp_path / "destination.db"
    db = sqlite3.connect(source)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount REAL)")
    db.executemany("INSERT INTO orders VALUES (?, ?, ?)", ((i, f"c{i % 97}", i * 0.5) for i in range(400_000)))
    db.commit()
    db.close()
    token = "kill-token-0123456789abcdefgh"
    data = tmp_path / "data"

    def call(server: Server, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/api.rsc/{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"x-cdata-authtoken": token, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    server = Server(data, ODATA_SYNC_ADMIN_TOKEN=token)
    try:
        for name, path in (("src", source), ("dst", destination)):
            call(server, "POST", "Connections", {"Name": name, "ProviderName": "SQLite",
                                                 "ConnectionString": f"Database={path}"})
        call(server, "POST", "Jobs", {"JobName": "big", "Source": "src", "Destination": "dst", "BatchSize": 5000,
                                      "Query#1": "REPLICATE [orders]"})
        call(server, "POST", "ExecuteJob", {"JobName": "big", "Async": True})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = call(server, "POST", "GetJobStatus", {"JobName": "big"})
            if status["Status"] == "RUNNING" and status["Progress"] >= 5:
                break
            time.sleep(0.05)
        assert status["Status"] == "RUNNING", status
    finally:
        server.process.kill()
        server.process.wait(timeout=30)

    copied = sqlite3.connect(destination).execute("SELECT count(*) FROM orders").fetchone()[0]
    assert copied % 5000 == 0 and copied < 400_000  # whole batches only

    again = Server(data)
    try:
        run = call(again, "GET", "History?$filter=JobName%20eq%20'big'")["value"][0]
        assert run["Status"] == "FAILED" and "interrupted" in run["Details"]
        assert call(again, "GET", "Jobs('big')")["Status"] == "IDLE"
        finished = call(again, "POST", "ExecuteJob", {"JobName": "big"})
        assert finished["value"][0]["Status"] == "SUCCESS"
    finally:
        again.stop()
    assert sqlite3.connect(destination).execute("SELECT count(*) FROM orders").fetchone()[0] == 400_000
