"""Lifecycle workers: claim jobs, run their handlers, record the outcome.

Any number of processes on any number of machines may run workers against one catalogue.
A job is run by one worker at a time (``lifecycle.queue``); a worker renews the lease of the
jobs it holds every third of ``lifecycle.lease_seconds``, so only a dead worker's jobs are
taken over.  A failure is retried with exponential back-off until the job's attempts are used
up, then the job is dead-lettered with its last error (``vna lifecycle status`` lists them,
``vna lifecycle retry`` queues them again).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifecycle import queue, scheduler
from lifecycle.engine import Engine, Handler, Reschedule
from lifecycle.handlers import HANDLERS
from lifecycle.policy.jobs import after_failure
from vna.errors import VnaError

if TYPE_CHECKING:
    from vna.archive import Archive

log = logging.getLogger(__name__)
#: Time given to jobs in flight to finish when asked to stop; then they are put back.
STOP_GRACE_SECONDS = 20.0


@dataclass
class RunSummary:
    done: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    rescheduled: Counter[str] = field(default_factory=Counter)
    ticks: list[scheduler.TickReport] = field(default_factory=list)


def worker_name() -> str:
    """Host, process and a random part: names the lease holder in the jobs table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def run_workers(
    archive: Archive,
    stop_event: asyncio.Event,
    *,
    workers: int | None = None,
    once: bool = False,
    as_of: dt.date | None = None,
    handlers: Mapping[str, Handler] | None = None,
    name: str | None = None,
    tick_seconds: float | None = None,
) -> RunSummary:
    """Run lifecycle workers until ``stop_event`` is set (or, with ``once``, until no job is
    ready: one scheduler tick, then the queue drained).

    ``handlers`` adds or replaces job kinds (tests; later features).  For ``vna serve``:
    ``asyncio.create_task(run_workers(archive, stop))`` and set ``stop`` before closing.
    """
    runner = _Runner(
        Engine(archive, as_of),
        stop_event,
        {**HANDLERS, **(handlers or {})},
        name or worker_name(),
    )
    lc = archive.settings.lifecycle
    return await runner.run(workers or lc.workers, once, tick_seconds or lc.tick_seconds)


class _Runner:
    def __init__(
        self, engine: Engine, stop: asyncio.Event, handlers: dict[str, Handler], name: str
    ) -> None:
        self.engine = engine
        self.stop = stop
        self.handlers = handlers
        self.name = name
        self.settings = engine.settings.lifecycle
        self.db = engine.archive.db
        self.in_flight: set[int] = set()
        self.summary = RunSummary()

    async def run(self, workers: int, once: bool, tick_seconds: float) -> RunSummary:
        log.info("lifecycle worker %s: %d worker(s)%s", self.name, workers, " once" if once else "")
        self.summary.ticks.append(await scheduler.tick(self.engine, force_tiering=once))
        background = [asyncio.create_task(self._heartbeat())]
        if not once:
            background.append(asyncio.create_task(self._tick_loop(tick_seconds)))
        loops = [asyncio.create_task(self._loop(once)) for _ in range(workers)]
        try:
            stopper = asyncio.create_task(self.stop.wait())
            done, _ = await asyncio.wait([*loops, stopper], return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                # Asked to stop: no new claims; jobs in flight get a grace period.
                _, late = await asyncio.wait(loops, timeout=STOP_GRACE_SECONDS)
                for task in late:
                    task.cancel()
            else:
                stopper.cancel()
            results = await asyncio.gather(*loops, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("lifecycle worker loop failed: %r", result)
        finally:
            for task in [*background, *loops]:
                task.cancel()
            await asyncio.gather(*background, *loops, return_exceptions=True)
        return self.summary

    async def _loop(self, once: bool) -> None:
        while not self.stop.is_set():
            try:
                async with self.db.acquire() as conn:
                    jobs = await queue.claim(conn, self.name, 1)
            except VnaError as exc:
                log.warning("cannot claim jobs: %s", exc)
                await self._sleep(self.settings.poll_seconds)
                continue
            if jobs:
                await self._process(jobs[0])
            elif once:
                if not self.in_flight:
                    return  # drained: nothing ready, nothing running here that could add more
                await asyncio.sleep(0.05)
            else:
                await self._sleep(self.settings.poll_seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _process(self, job: queue.Job) -> None:
        self.in_flight.add(job.id)
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                await self._record(queue.bury, job, f"no handler for job kind {job.kind!r}")
                self.summary.dead[job.kind] += 1
                return
            try:
                await handler(self.engine, job)
            except Reschedule as later:
                await self._record(queue.reschedule, job, later.seconds, later.note)
                self.summary.rescheduled[job.kind] += 1
            except asyncio.CancelledError:
                # Stopping: give the job back at once, attempt not counted.
                await asyncio.shield(
                    self._record(queue.reschedule, job, 0.0, "worker stopped mid-job")
                )
                raise
            except Exception as exc:
                await self._failed(job, exc)
            else:
                if not await self._record(queue.complete, job):
                    log.warning("job %d finished after its lease was taken over", job.id)
                self.summary.done[job.kind] += 1
        finally:
            self.in_flight.discard(job.id)

    async def _failed(self, job: queue.Job, exc: Exception) -> None:
        # A VnaError not marked retriable is a permanent refusal (a bad payload, a fixity
        # failure): the same input fails the same way.  Anything else may be transient (a
        # dropped connection, a race) and is retried.
        retriable = exc.retriable if isinstance(exc, VnaError) else True
        message = f"{type(exc).__name__}: {exc}"[:2000]
        outcome = after_failure(
            job.attempts,
            job.max_attempts,
            retriable,
            self.settings.retry_base_seconds,
            self.settings.retry_max_seconds,
        )
        if not isinstance(exc, VnaError):
            log.exception("job %d (%s) failed", job.id, job.kind, exc_info=exc)
        if outcome.state == "dead":
            log.error(
                "job %d (%s) is dead after %d attempt(s): %s",
                job.id,
                job.kind,
                job.attempts,
                message,
            )
            await self._record(queue.bury, job, message)
            self.summary.dead[job.kind] += 1
        else:
            log.warning(
                "job %d (%s) failed (attempt %d of %d), retry in %ds: %s",
                job.id,
                job.kind,
                job.attempts,
                job.max_attempts,
                outcome.delay_seconds,
                message,
            )
            await self._record(queue.retry, job, float(outcome.delay_seconds), message)
            self.summary.retried[job.kind] += 1

    async def _record(self, action: object, job: queue.Job, *args: object) -> bool:
        """Write a job's outcome; a catalogue outage here leaves the lease to expire and the job
        to be retried (it is idempotent)."""
        try:
            async with self.db.acquire() as conn:
                return bool(await action(conn, job.id, self.name, *args))  # type: ignore[operator]
        except VnaError as exc:
            log.error("could not record the outcome of job %d: %s", job.id, exc)
            return False

    async def _heartbeat(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.db.acquire() as conn:
                    await queue.heartbeat(conn, sorted(self.in_flight), self.name)
            except VnaError as exc:
                log.warning("cannot renew job leases: %s", exc)

    async def _tick_loop(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                self.summary.ticks.append(await scheduler.tick(self.engine))
                del self.summary.ticks[:-10]
            except Exception:
                log.exception("lifecycle scheduler tick failed")


async def run_once(
    archive: Archive, *, as_of: dt.date | None = None, workers: int = 2
) -> RunSummary:
    """One scheduler tick, then every ready job: ``vna lifecycle run --once``."""
    return await run_workers(archive, asyncio.Event(), workers=workers, once=True, as_of=as_of)
