"""The janitor: nothing stays that no job owns, and finished jobs go after the retention period.

At start-up it removes spool files no job owns (half-received uploads of a killed server,
files of jobs removed while it was down); then, every minute, it removes the jobs that
finished more than ``retention_hours`` ago, with their pages, events and files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from .settings import Settings
from .store import Store

log = logging.getLogger("pagestream.janitor")

PURGE_EVERY = 60.0


async def sweep_spool(spool_dir: Path, owned: set[str]) -> int:
    """Remove every file of the spool folder that no job owns."""

    def sweep() -> int:
        removed = 0
        for path in spool_dir.iterdir():
            if path.is_file() and path.name not in owned:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    return await asyncio.to_thread(sweep)


async def purge_expired(store: Store, settings: Settings, now: float | None = None) -> int:
    """Remove the jobs that finished more than ``retention_hours`` ago, and their files."""
    if settings.retention_hours <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - settings.retention_hours * 3600
    removed = 0
    while True:
        jobs = await store.purge_finished(cutoff)
        for job in jobs:
            await asyncio.to_thread((settings.spool_dir / job.spool_name).unlink, missing_ok=True)
        removed += len(jobs)
        if not jobs:
            return removed


class Janitor:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.settings.spool_dir.mkdir(parents=True, exist_ok=True)
        removed = await sweep_spool(self.settings.spool_dir, await self.store.spool_names())
        if removed:
            log.info("removed %d spool files that no job owns", removed)
        self._task = asyncio.create_task(self._run(), name="pagestream-janitor")

    async def _run(self) -> None:
        while True:
            try:
                removed = await purge_expired(self.store, self.settings)
                if removed:
                    log.info("removed %d jobs finished more than %g hours ago", removed, self.settings.retention_hours)
            except Exception:
                log.exception("the retention purge failed; it runs again in %g s", PURGE_EVERY)
            await asyncio.sleep(PURGE_EVERY)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
