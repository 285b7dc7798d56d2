"""The job queue and its workers on a real PostgreSQL: the outbox, exactly-one processing under
concurrency, a killed worker's job retried, back-off, dead letters."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lifecycle import queue
from lifecycle.engine import Engine, Reschedule
from lifecycle.queue import Job
from lifecycle.worker import run_once, run_workers
from tests.integration.lifecycle_support import fetch, ingest, jobs, opened, with_lifecycle
from tests.phantom import smooth_ct_study
from vna.config import Settings
from vna.errors import InvalidRequest, StorageError

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parents[2]


async def enqueue_many(archive, kind: str, n: int) -> list[int]:
    ids = []
    async with archive.db.transaction() as conn:
        for i in range(n):
            job_id = await queue.enqueue(conn, kind, {"n": i})
            assert job_id is not None
            ids.append(job_id)
    return ids


async def test_ingest_outbox_jobs_are_carried_out(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, compression={"level": 3})
    async with opened(settings) as archive:
        study = smooth_ct_study(series=1, slices=3, size=64)
        await ingest(archive, study)
        # Queued by ingest in the instance's own transaction, one per instance.
        stored = await jobs(archive, "instance-stored")
        assert len(stored) == 3 and {j["state"] for j in stored} == {"queued"}

        summary = await run_once(archive)
        assert summary.done["instance-stored"] == 3
        assert {j["state"] for j in await jobs(archive, "instance-stored")} == {"done"}
        retention = await fetch(archive, "SELECT * FROM study_retention")
        assert len(retention) == 1  # computed at ingest (kept indefinitely: no rules)
        assert retention[0]["retain_until"] is None


async def test_two_workers_never_process_the_same_job_twice(archive_settings: Settings) -> None:
    seen: collections.Counter[int] = collections.Counter()
    by_worker: dict[str, int] = collections.Counter()

    def handler_for(name: str):
        async def handler(engine: Engine, job: Job) -> None:
            seen[job.id] += 1
            by_worker[name] += 1
            await asyncio.sleep(0.002 * (job.id % 3))

        return handler

    async with opened(archive_settings) as one, opened(archive_settings) as two:
        ids = await enqueue_many(one, "test", 300)
        # Two archives: two connection pools, as two machines would have.
        await asyncio.gather(
            run_workers(
                one,
                asyncio.Event(),
                workers=4,
                once=True,
                handlers={"test": handler_for("one")},
                name="one",
            ),
            run_workers(
                two,
                asyncio.Event(),
                workers=4,
                once=True,
                handlers={"test": handler_for("two")},
                name="two",
            ),
        )
        assert sorted(seen) == sorted(ids)
        assert set(seen.values()) == {1}
        assert by_worker["one"] > 0 and by_worker["two"] > 0
        states = await fetch(one, "SELECT state, attempts FROM jobs WHERE kind = 'test'")
        assert {(r["state"], r["attempts"]) for r in states} == {("done", 1)}


CLAIM_AND_HANG = textwrap.dedent(
    """
    import asyncio, sys, asyncpg
    from lifecycle import queue

    async def main():
        conn = await asyncpg.connect(sys.argv[1])
        jobs = await queue.claim(conn, "doomed-worker", 1)
        print(jobs[0].id, flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_a_killed_worker_leaves_its_job_to_be_retried(
    archive_settings: Settings, database_url: str
) -> None:
    settings = with_lifecycle(archive_settings, lifecycle={"lease_seconds": 2})
    done: list[int] = []

    async def handler(engine: Engine, job: Job) -> None:
        done.append(job.id)

    async def work() -> None:
        await run_workers(archive, asyncio.Event(), once=True, handlers={"test": handler})

    async with opened(settings) as archive:
        (job_id,) = await enqueue_many(archive, "test", 1)
        worker = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [sys.executable, "-c", CLAIM_AND_HANG, database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = await asyncio.to_thread(worker.stdout.readline)  # type: ignore[union-attr]
            assert int(line) == job_id
            # Mid-job: running, leased to the doomed worker; nobody else may take it.
            (row,) = await jobs(archive, "test")
            assert (row["state"], row["locked_by"]) == ("running", "doomed-worker")
            await work()
            assert done == []
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        await asyncio.sleep(2.2)  # the lease runs out
        await work()
        assert done == [job_id]
        (row,) = await jobs(archive, "test")
        assert (row["state"], row["attempts"]) == ("done", 2)


async def test_live_workers_renew_their_lease(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, lifecycle={"lease_seconds": 1})
    runs: list[int] = []

    async def slow(engine: Engine, job: Job) -> None:
        runs.append(job.id)
        await asyncio.sleep(2.5)  # longer than the lease: renewed every third of it

    async with opened(settings) as one, opened(settings) as two:
        await enqueue_many(one, "test", 1)
        first = asyncio.create_task(
            run_workers(one, asyncio.Event(), workers=1, once=True, handlers={"test": slow})
        )
        await asyncio.sleep(1.5)
        await run_workers(two, asyncio.Event(), workers=1, once=True, handlers={"test": slow})
        await first
        assert len(runs) == 1


async def test_failures_back_off_then_go_dead_and_can_be_retried(
    archive_settings: Settings,
) -> None:
    settings = with_lifecycle(archive_settings, lifecycle={"retry_base_seconds": 60})
    calls: list[int] = []

    async def flaky(engine: Engine, job: Job) -> None:
        calls.append(job.attempts)
        raise StorageError("store briefly unavailable")

    async def broken(engine: Engine, job: Job) -> None:
        raise InvalidRequest("this payload can never work")

    handlers = {"flaky": flaky, "broken": broken}
    async with opened(settings) as archive:
        async with archive.db.transaction() as conn:
            flaky_id = await queue.enqueue(conn, "flaky", {})
            broken_id = await queue.enqueue(conn, "broken", {})
            unknown_id = await queue.enqueue(conn, "no-such-kind", {})
            await conn.execute("UPDATE jobs SET max_attempts = 3 WHERE id = $1", flaky_id)
        assert flaky_id is not None and broken_id is not None

        await run_workers(archive, asyncio.Event(), once=True, handlers=handlers)
        rows = {r["id"]: r for r in await jobs(archive)}
        flaky_row = rows[flaky_id]
        assert flaky_row["state"] == "queued" and flaky_row["attempts"] == 1
        assert "StorageError: store briefly unavailable" in flaky_row["last_error"]
        delay = await fetch(
            archive,
            "SELECT extract(epoch FROM run_after - now()) AS s FROM jobs WHERE id = $1",
            flaky_id,
        )
        assert 50 < delay[0]["s"] <= 60  # retry_base_seconds
        # A permanent error is dead at once; so is a kind no worker knows.
        assert rows[broken_id]["state"] == "dead" and rows[broken_id]["attempts"] == 1
        assert "InvalidRequest: this payload can never work" in rows[broken_id]["last_error"]
        assert rows[unknown_id]["state"] == "dead"

        for _ in range(2):  # time passes
            await fetch(archive, "UPDATE jobs SET run_after = now() WHERE id = $1", flaky_id)
            await run_workers(archive, asyncio.Event(), once=True, handlers=handlers)
        assert calls == [1, 2, 3]
        (row,) = await fetch(archive, "SELECT state, attempts FROM jobs WHERE id = $1", flaky_id)
        assert (row["state"], row["attempts"]) == ("dead", 3)

        async with archive.db.acquire() as conn:
            assert sorted(await queue.requeue_dead(conn, [flaky_id, broken_id])) == sorted(
                [flaky_id, broken_id]
            )
        (row,) = await fetch(archive, "SELECT state, attempts FROM jobs WHERE id = $1", flaky_id)
        assert (row["state"], row["attempts"]) == ("queued", 0)


async def test_reschedule_does_not_use_up_attempts(archive_settings: Settings) -> None:
    async def waiting(engine: Engine, job: Job) -> None:
        raise Reschedule(300, "restore under way")

    async with opened(archive_settings) as archive:
        (job_id,) = await enqueue_many(archive, "waiting", 1)
        for _ in range(3):
            await fetch(archive, "UPDATE jobs SET run_after = now() WHERE id = $1", job_id)
            summary = await run_workers(
                archive, asyncio.Event(), once=True, handlers={"waiting": waiting}
            )
            assert summary.rescheduled["waiting"] == 1
        (row,) = await jobs(archive, "waiting")
        assert (row["state"], row["attempts"], row["last_error"]) == (
            "queued",
            0,
            "restore under way",
        )


async def test_stopping_gives_running_jobs_back(archive_settings: Settings) -> None:
    started = asyncio.Event()

    async def forever(engine: Engine, job: Job) -> None:
        started.set()
        await asyncio.sleep(3600)

    async with opened(archive_settings) as archive:
        await enqueue_many(archive, "forever", 1)
        stop = asyncio.Event()
        import lifecycle.worker as worker_module

        grace = worker_module.STOP_GRACE_SECONDS
        worker_module.STOP_GRACE_SECONDS = 0.2
        try:
            task = asyncio.create_task(
                run_workers(archive, stop, workers=1, handlers={"forever": forever})
            )
            await asyncio.wait_for(started.wait(), 10)
            t0 = time.monotonic()
            stop.set()
            await asyncio.wait_for(task, 10)
            assert time.monotonic() - t0 < 5
        finally:
            worker_module.STOP_GRACE_SECONDS = grace
        (row,) = await jobs(archive, "forever")
        assert (row["state"], row["attempts"], row["locked_by"]) == ("queued", 0, None)
