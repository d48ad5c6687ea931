"""Holding a worker's run at a chosen engine event, so a test can act at an exact point of a run.

``run_job`` as the worker imports it is wrapped by a pass-through generator: each event is handed on (and recorded
by the worker) first; after the first event ``when`` accepts, the run waits until the test sets ``resume``. The
engine is not touched: only its events and run_job's signature are relied on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest

from odata_sync.executor import worker


@dataclass
class Pause:
    when: Callable[[object], bool]
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    armed: bool = True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Pause:
        monkeypatch.setattr(worker, "run_job", self._wrap(worker.run_job))
        return self

    def _wrap(self, run_job):
        async def paused(*args, **kwargs) -> AsyncIterator:
            async with aclosing(run_job(*args, **kwargs)) as events:
                async for event in events:
                    yield event  # recorded first: GetJobStatus shows this point while the run waits
                    if self.armed and self.when(event):
                        self.armed = False
                        self.reached.set()
                        await self.resume.wait()
        return paused
