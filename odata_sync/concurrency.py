"""Awaitables run side by side, and stopped without leaving any running unobserved."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar

T = TypeVar("T")


async def both(first: Awaitable[T], second: Awaitable[T]) -> list[T]:
    """Both results, run at once; when one fails the other is stopped before the error is raised."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        await stop_tasks(*tasks)


async def stop_tasks(*tasks: asyncio.Future | None) -> None:
    """Cancel every unfinished one of ``tasks`` (None: skipped), wait until each has ended and swallow what it
    raised (so no error goes unretrieved): the caller no longer wants their results."""
    present = [task for task in tasks if task is not None]
    for task in present:
        task.cancel()
    for task in present:
        with suppress(BaseException):
            await task
