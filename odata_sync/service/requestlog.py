"""The API access log (the Requests set), written in batches off the request path so logging costs ~nothing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
import uuid

from odata_sync.service.common import touch
from odata_sync.store.engine import Store

log = logging.getLogger(__name__)
_SECRET_PARAM = re.compile(r"((?:^|[?&])(?:%40|@)?[^=&]*(?:authtoken|password|pwd|secret|token|apikey)[^=&]*=)[^&]*",
                           re.I)


def strip_secrets(url: str) -> str:
    return _SECRET_PARAM.sub(r"\1********", url)


class RequestLog:
    PRUNE_EVERY = 600.0  # seconds

    def __init__(self, store: Store, last_login: dict, *, interval: float = 0.5, max_batch: int = 2000,
                 keep_days: int = 30) -> None:
        self.store = store
        self.last_login = last_login
        self.keep_days = keep_days
        self._next_prune = 0.0
        self.interval = interval
        self.max_batch = max_batch
        self._pending: list[dict] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def record(self, *, method: str, url: str, user: str | None, remote: str | None, status: int, runtime_ms: int,
               error: str | None) -> None:
        """Cheap on the request path: a tuple now; ids, secret stripping and rows at flush time."""
        self._pending.append((time.time(), method, url, user, remote, status, runtime_ms, error))
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    @staticmethod
    def _row(entry: tuple) -> dict:
        when, method, url, user, remote, status, runtime_ms, error = entry
        return {"Id": str(uuid.uuid4()), "Timestamp": dt.datetime.fromtimestamp(when, dt.UTC), "Method": method,
                "URL": strip_secrets(url)[:4000], "User": user, "RemoteIP": remote, "Status": status,
                "Runtime": runtime_ms, "Error": error[:2000] if error else None}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="request-log")

    async def stop(self) -> None:
        """Let a flush under way finish (cancelling it could leave its store transaction half done), then write
        what is left; a store that refuses the last batch loses it, logged, rather than failing the shutdown."""
        if self._task:
            self._stopping.set()
            self._wake.set()
            await self._task
        try:
            await self.flush()
        except Exception:
            log.exception("writing the request log at shutdown failed; its last entries are lost")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                await self.flush()
                if self.keep_days and time.monotonic() >= self._next_prune:
                    await self.prune()
            except Exception:  # the log must never take the server down; the next flush retries
                log.exception("writing the request log failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def prune(self) -> int:
        """Drop entries older than ``keep_days`` so years of traffic do not fill the store."""
        self._next_prune = time.monotonic() + self.PRUNE_EVERY
        requests = self.store.table("Requests")
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.keep_days)
        async with self.store.write() as conn:
            result = await conn.execute(requests.delete().where(requests.c.Timestamp < cutoff))
        return result.rowcount

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        logins = dict(self.last_login)
        self.last_login.clear()
        if not batch and not logins:
            return
        requests, users = self.store.table("Requests"), self.store.table("Users")
        try:
            async with self.store.write() as conn:
                if batch:
                    await conn.execute(requests.insert(), [self._row(entry) for entry in batch])
                for name, when in logins.items():
                    await touch(conn, users, users.c.User == name, when, LastLogin=when)
        except Exception:
            self._pending[:0] = batch[-self.max_batch * 5:]
            raise
