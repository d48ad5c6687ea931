"""Two awaitables run at once, neither left running unobserved when the other fails."""

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
        for task in tasks:
            if not task.done():
                task.cancel()
                with suppress(BaseException):
                    await task
