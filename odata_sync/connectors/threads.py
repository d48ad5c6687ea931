"""One dedicated thread per blocking connection (sqlite3, duckdb), so the event loop never blocks.

Those drivers want every call on the thread that opened the connection; a one-worker executor gives exactly that and
serialises calls. When the awaiting task is cancelled (a timeout), the running statement is interrupted through the
driver's thread-safe ``interrupt()`` so the thread is free again soon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ConnectionThread:
    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.interrupt: Callable[[], None] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if self.interrupt is not None and not future.done():
                with contextlib.suppress(Exception):
                    self.interrupt()
            future.add_done_callback(_consume)
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=False)


def _consume(future: asyncio.Future) -> None:
    """Retrieve an abandoned call's outcome so asyncio does not log 'exception was never retrieved'."""
    if not future.cancelled():
        future.exception()
