"""What the benchmark scripts share: errors, logging, free ports, Ctrl-C on SIGTERM, and odata-sync started as a
user starts it (``python -m odata_sync serve`` in a data directory, with a known admin token). Standard library only."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY_RE = re.compile(r"odata-sync listening on (http://\S+?/api\.rsc/)")


class BenchError(Exception):
    """A failure that aborts the benchmark, or the measurement at hand (printed without a traceback)."""


def log(msg: str = "") -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail_text(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def stop_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C: the script unwinds and removes what it made."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session``), SIGKILL after ``grace`` s."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Server:
    """``python -m odata_sync serve`` as a subprocess in its own session, its output in ``log_path``."""

    def __init__(self, data_dir: Path, token: str, *, port: int | None = None, python: str = "python",
                 log_path: Path | None = None, start_timeout: float = 60) -> None:
        self.data_dir, self.token, self.python = data_dir, token, python
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}/api.rsc/"
        self.log_path = log_path or data_dir.parent / f"serve-{self.port}.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start and wait for the ready line; returns the seconds it took."""
        cmd = [self.python, "-m", "odata_sync", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        env = dict(os.environ, ODATA_SYNC_ADMIN_TOKEN=self.token, PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        while True:
            text = self.log_path.read_text(errors="replace")
            if READY_RE.search(text):
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise BenchError(f"odata-sync serve exited with {self.proc.returncode} before it was ready:\n"
                                 f"{tail_text(text)}")
            if time.monotonic() - t0 > self.start_timeout:
                self.stop()
                raise BenchError(f"odata-sync serve printed no ready line in {self.start_timeout:.0f} s:\n"
                                 f"{tail_text(text)}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL if it does not end within 15 s."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            stop_group(proc, 15)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
