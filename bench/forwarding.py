"""Forwarding benchmark: ingest throughput with 2 active ``[[forward]]`` rules against none
(issue 20: within 10 %), and how fast the forwards then reach a destination.

For each case in turn (rounds alternating which goes first, each on a fresh catalogue and data
directory): a pynetdicom storage SCP on loopback (accepting and discarding) is the
destination; the lifecycle workers run alongside ingest as ``vna serve`` runs them (tick every
second); the CT corpus of ``bench/corpus.py`` is ingested through the pipeline with C
concurrent senders.  Printed per round: ingest instances/s, and, with rules, the seconds until
every forward was sent once ingest had finished.  Forwarding is fed by the change feed, not by
ingest, so the difference measured is the workers' competition for the CPU, not extra work
on the ingest path.

    python bench/forwarding.py                       # 1x2x100 CT, 3 rounds
    python bench/forwarding.py --slices 50 --rounds 1

PostgreSQL: ``VNA_BENCH_DATABASE_URL`` or an embedded server under a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from pynetdicom import AE, AllStoragePresentationContexts, evt  # noqa: E402

from bench.corpus import CorpusSpec, generate  # noqa: E402
from lifecycle.worker import run_workers  # noqa: E402
from vna.archive import Archive  # noqa: E402
from vna.catalog.database import EmbeddedPostgres  # noqa: E402
from vna.config import (  # noqa: E402
    DEFAULT_SOURCE,
    CompressionSettings,
    DestinationSettings,
    ForwardRuleSettings,
    LifecycleSettings,
    Settings,
)
from vna.ingest.pipeline import Sender  # noqa: E402

SCP_PORT = 11199


async def fresh_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = admin_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")


def start_scp() -> Any:
    ae = AE(ae_title="BENCHDEST")
    ae.supported_contexts = AllStoragePresentationContexts
    return ae.start_server(
        ("127.0.0.1", SCP_PORT), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0)]
    )


async def one_case(
    admin_url: str, tmp: Path, files: list[Path], rules: int, concurrency: int
) -> dict[str, float]:
    url = await fresh_database(admin_url, f"vna_bench_fwd_{os.getpid()}_{rules}")
    forward = tuple(
        ForwardRuleSettings(name=f"rule{i}", destination=f"dest{i}", modalities=("CT",))
        for i in range(rules)
    )
    settings = Settings(
        data_dir=tmp / f"data-{rules}-{uuid.uuid4().hex[:6]}",
        database_url=url,
        compression=CompressionSettings(level=0),  # compression would dominate both cases
        destinations=tuple(
            DestinationSettings(f"dest{i}", "BENCHDEST", "127.0.0.1", SCP_PORT)
            for i in range(rules)
        ),
        forward=forward,
        lifecycle=LifecycleSettings(poll_seconds=1),
    )
    archive = await Archive.open(settings)
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(archive, stop, tick_seconds=1.0))
    try:
        sender = Sender(source=DEFAULT_SOURCE, protocol="import", actor="bench")
        pending = list(files)

        async def feeder() -> None:
            while pending:
                path = pending.pop()
                copy = archive.incoming / f"{uuid.uuid4().hex}.dcm"
                shutil.copyfile(path, copy)
                await archive.ingester.ingest_file(copy, sender)

        t0 = time.perf_counter()
        await asyncio.gather(*(feeder() for _ in range(concurrency)))
        ingest_seconds = time.perf_counter() - t0
        drained = 0.0
        if rules:
            want = len(files) * rules
            while True:
                async with archive.db.acquire() as conn:
                    sent = await conn.fetchval("SELECT count(*) FROM forwards WHERE state = 'sent'")
                if sent >= want:
                    break
                await asyncio.sleep(0.2)
            drained = time.perf_counter() - t0 - ingest_seconds
    finally:
        stop.set()
        await workers
        await archive.close()
    return {"ingest_per_second": len(files) / ingest_seconds, "forward_drain_seconds": drained}


async def main_async(args: argparse.Namespace) -> None:
    corpus = generate(CorpusSpec(studies=1, series=2, slices=args.slices))
    files = corpus.files
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        external = os.environ.get("VNA_BENCH_DATABASE_URL")
        server = None
        if external:
            admin_url = external
        else:
            server = EmbeddedPostgres(tmp / "pg", database="vna")
            admin_url = await asyncio.to_thread(server.start)
        scp = start_scp()
        figures: dict[int, list[dict[str, float]]] = {0: [], 2: []}
        try:
            for r in range(args.rounds):
                for rules in (0, 2) if r % 2 == 0 else (2, 0):
                    f = await one_case(admin_url, tmp, files, rules, args.concurrency)
                    figures[rules].append(f)
                    print(
                        f"round {r + 1} rules={rules}: ingest {f['ingest_per_second']:.1f}"
                        f" instances/s, forwards drained {f['forward_drain_seconds']:.1f} s"
                        " after ingest"
                    )
        finally:
            scp.shutdown()
            if server is not None:
                server.stop()
    none = statistics.median(f["ingest_per_second"] for f in figures[0])
    two = statistics.median(f["ingest_per_second"] for f in figures[2])
    print(
        f"{len(files)} CT instances, {args.concurrency} senders, {args.rounds} rounds (medians):"
        f" no rules {none:.1f}/s, 2 rules {two:.1f}/s, ratio {two / none:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=100, help="slices per series (2 series)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main_async(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
