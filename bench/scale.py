"""Several archive nodes on one catalogue (issue 21, item 5): throughput, contention, and the
catalogue's cost per instance at scale.

1. **Nodes.** For 1, 2 and 4 nodes (``vna serve`` processes, one server process each, on one
   PostgreSQL database and one bucket on a moto S3 server, with the multi-node test harness
   tests/multinode.py), C STOW-RS clients send the same number of instances round-robin across
   the nodes.  Prints instances/s, client errors, and the catalogue's contention: lock waits
   (backends of the database waiting on a lock, sampled every 50 ms from ``pg_locks`` and
   ``pg_stat_activity``) and deadlocks (``pg_stat_database.deadlocks`` of the database).  Then
   checks that the catalogue holds each instance once, with its object.  On a 2-core machine the
   point is not that more nodes are faster (they share the cores) but that they do not slow
   down or contend.

2. **Catalogue at scale.** For each size (``--catalogue 1000000,3000000``), generates that many
   instances through the real schema with SQL ``generate_series`` (bench/qido_scale.py's study
   mix), plus the rows each instance adds elsewhere (one audit row, one change-log row, one
   verified copy per replica, as a real ingest and replication write them), ``VACUUM ANALYZE``,
   and prints rows and bytes (heap and index) per table and per million instances.  Then starts
   ``vna serve`` on it and times QIDO-RS study searches (p50/p95 per kind).

    .venv/bin/python bench/scale.py                       # both parts, default sizes
    .venv/bin/python bench/scale.py --skip-catalogue --instances 400
    .venv/bin/python bench/scale.py --skip-nodes --catalogue 10000000

A measurement, not a test; it exits 1 only when something was lost, duplicated or deadlocked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from bench.qido_scale import _date_range_query, generate, percentile, timed_get  # noqa: E402
from bench.servers import start_ours  # noqa: E402
from tests.conftest import free_port, with_database  # noqa: E402
from tests.factory import ct_study, part10, stow_body  # noqa: E402
from tests.multinode import Cluster, s3_keys  # noqa: E402
from vna.catalog.database import EmbeddedPostgres  # noqa: E402

#: The catalogue tables whose size grows with the instances (the others stay small).
TABLES = (
    "patients",
    "studies",
    "series",
    "instances",
    "audit",
    "change_log",
    "replicas",
    "object_layouts",
    "jobs",
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    return run(_fetch(url, query, *args))


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def execute(url: str, statement: str) -> None:
    run(_execute(url, statement))


# --- part 1: nodes -----------------------------------------------------------------------------


class LockSampler(threading.Thread):
    """Samples, every 50 ms, the backends of one database waiting on a lock."""

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.admin_url = admin_url
        self.database = database
        self.stop = threading.Event()
        self.samples = 0
        self.waiting_samples = 0
        self.max_waiting = 0
        self.waits: dict[str, int] = {}

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            while not self.stop.is_set():
                rows = await conn.fetch(
                    "SELECT l.locktype, l.mode, a.query FROM pg_locks l"
                    " JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.datname = $1",
                    self.database,
                )
                self.samples += 1
                if rows:
                    self.waiting_samples += 1
                    self.max_waiting = max(self.max_waiting, len(rows))
                    for r in rows:
                        what = f"{r['locktype']} {r['mode']}: {(r['query'] or '')[:60]}"
                        self.waits[what] = self.waits.get(what, 0) + 1
                await asyncio.sleep(0.05)
        finally:
            await conn.close()


def corpus(instances: int, per_request: int, size: int) -> list[tuple[bytes, str, int]]:
    """STOW-RS bodies of ``per_request`` instances each (one series of one study)."""
    bodies = []
    for i in range(max(1, instances // per_request)):
        study = ct_study(patient_id=f"S{i % 50}", series=1, slices=per_request, size=size)
        body, ctype = stow_body([part10(ds) for ds in study])
        bodies.append((body, ctype, len(study)))
    return bodies


def nodes_run(
    root: Path,
    admin_url: str,
    s3_endpoint: str,
    nodes: int,
    bodies: list[tuple[bytes, str, int]],
    clients: int,
) -> dict[str, Any]:
    import boto3
    import requests

    name = f"scale_{nodes}n_{os.getpid()}"
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute(admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    bucket = name.replace("_", "-")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    storage_url = f"s3://{bucket}?endpoint_url={s3_endpoint}&region=us-east-1"
    cluster = Cluster(root / name, url, storage_url)
    (root / name).mkdir(parents=True, exist_ok=True)
    try:
        cluster.add_nodes(nodes)
        # Warm-up: one small request per node (connection pools, first imports).
        for node in cluster.nodes:
            warm = ct_study(patient_id="WARM", series=1, slices=1, size=32)
            body, ctype = stow_body([part10(ds) for ds in warm])
            r = requests.post(
                f"{node.url}/studies", data=body, headers={"Content-Type": ctype}, timeout=60
            )
            assert r.status_code == 200, r.text[:300]
        deadlocks_before = int(
            fetch(url, "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", name)[0][0]
        )
        sampler = LockSampler(admin_url, name)
        sampler.start()
        pending = list(bodies)
        lock = threading.Lock()
        errors: list[str] = []
        stored = 0

        def client() -> None:
            nonlocal stored
            session = requests.Session()
            while True:
                with lock:
                    if not pending:
                        return
                    body, ctype, count = pending.pop()
                node = cluster.next_node()
                try:
                    r = session.post(
                        f"{node.url}/studies",
                        data=body,
                        headers={"Content-Type": ctype},
                        timeout=300,
                    )
                except requests.RequestException as exc:
                    with lock:
                        errors.append(f"{node.name}: {exc}")
                    continue
                with lock:
                    if r.status_code == 200:
                        stored += count
                    else:
                        errors.append(f"{node.name}: {r.status_code} {r.text[:200]}")

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        deadlocks = (
            int(fetch(url, "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", name)[0][0])
            - deadlocks_before
        )
        row = fetch(
            url,
            "SELECT count(*) AS n, count(DISTINCT sop_uid) AS sops,"
            " count(DISTINCT object_key) AS keys FROM instances",
        )[0]
        keys = set(s3_keys(storage_url, "sha256/"))
        referenced = {r[0] for r in fetch(url, "SELECT object_key FROM instances")}
        sent = sum(count for _, _, count in bodies) + len(cluster.nodes)
        footprint = table_footprint(url)
        return {
            "nodes": nodes,
            "clients": clients,
            "instances": stored,
            "seconds": round(elapsed, 2),
            "instances_per_s": round(stored / elapsed, 1),
            "errors": errors[:5],
            "error_count": len(errors),
            "lock_wait_samples": sampler.waiting_samples,
            "samples": sampler.samples,
            "max_waiting_backends": sampler.max_waiting,
            "lock_waits": dict(sorted(sampler.waits.items(), key=lambda kv: -kv[1])[:5]),
            "deadlocks": deadlocks,
            "catalogued": row["n"],
            "lost": sent - row["n"] if not errors else None,
            "duplicated": row["n"] - row["sops"] + (row["n"] - row["keys"]),
            "rows_without_object": len(referenced - keys),
            "footprint": footprint,
        }
    finally:
        cluster.shutdown()
        execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- part 2: the catalogue at scale ------------------------------------------------------------

#: What each instance adds besides its own row: its "store" audit record, its change-log entry
#: and one verified copy per replica (one replica here), shaped as the archive writes them.
EXTRAS = """
INSERT INTO audit (at, actor, origin, action, outcome, patient_id, issuer, study_uid,
                   series_uid, sop_uid, detail)
SELECT i.received_at, 'MODALITY1', '10.0.0.17', 'store', 'success', p.patient_id, p.issuer,
       st.study_uid, se.series_uid, i.sop_uid,
       jsonb_build_object('protocol', 'dimse', 'source', i.source, 'size', i.size)
FROM instances i JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.id BETWEEN $1 AND $2;

INSERT INTO change_log (sequence, action, study_uid, series_uid, sop_uid, source, changed_at,
                        logged_at)
SELECT i.id, 'create', st.study_uid, se.series_uid, i.sop_uid, i.source, i.received_at,
       i.received_at
FROM instances i JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk
WHERE i.id BETWEEN $1 AND $2;

INSERT INTO replicas (store, object_key, instance_fk, sha256, size)
SELECT 'dr', i.object_key, i.id, i.sha256, i.stored_size
FROM instances i
WHERE i.id BETWEEN $1 AND $2;
"""


async def add_extras(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM audit WHERE action = 'store'"):
            return  # an earlier run (--pgdata) added them
        await conn.execute("SET synchronous_commit = off")
        low, high = await conn.fetchrow("SELECT min(id), max(id) FROM instances")
        step = 500_000
        for start in range(low, high + 1, step):
            for statement in EXTRAS.strip().split(";\n\n"):
                await conn.execute(statement.rstrip(";"), start, start + step - 1)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def table_footprint(url: str) -> dict[str, dict[str, int]]:
    rows = fetch(
        url,
        "SELECT c.relname AS name, c.reltuples::bigint AS estimate,"
        " pg_table_size(c.oid) AS heap, pg_indexes_size(c.oid) AS index"
        " FROM pg_class c WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'",
        list(TABLES),
    )
    out = {}
    for r in rows:
        count = int(fetch(url, f'SELECT count(*) FROM "{r["name"]}"')[0][0])
        out[r["name"]] = {"rows": count, "heap": int(r["heap"]), "index": int(r["index"])}
    return out


def qido(url: str, counts: dict[str, int], queries: int) -> dict[str, dict[str, float]]:
    server = start_ours(database_url=url)
    try:
        base = server.dicomweb
        rng = random.Random(7)
        kinds = {
            "PatientID": lambda: (
                f"{base}/studies?PatientID=P{rng.randint(1, counts['patients']):08d}"
            ),
            "date range + modality": lambda: _date_range_query(base, rng),
            "AccessionNumber": lambda: (
                f"{base}/studies?AccessionNumber=ACC{rng.randint(1, counts['studies']):09d}"
            ),
        }
        out = {}
        for name, make in kinds.items():
            for _ in range(10):
                timed_get(make())
            times, hits = [], []
            for _ in range(queries):
                ms, n = timed_get(make())
                times.append(ms)
                hits.append(n)
            out[name] = {
                "p50_ms": round(percentile(times, 50), 2),
                "p95_ms": round(percentile(times, 95), 2),
                "mean_hits": round(statistics.mean(hits), 1),
            }
        return out
    finally:
        server.stop()


def warm(url: str) -> None:
    """Read the database's tables and indexes once (pg_prewarm is not in the embedded build):
    the figures are for a server in steady state, its catalogue in the page cache."""
    for table in ("patients", "studies", "series", "instances"):
        fetch(url, f'SELECT count(*) FROM "{table}"')


def catalogue_run(admin_url: str, size: int, queries: int, keep: bool) -> dict[str, Any]:
    name = f"scale_catalogue_{size}"
    exists = fetch(admin_url, "SELECT 1 FROM pg_database WHERE datname = $1", name)
    if not exists:
        execute(admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    started = time.perf_counter()
    counts = run(generate(url, size))
    run(add_extras(url))
    generated = time.perf_counter() - started
    footprint = table_footprint(url)
    instances = footprint["instances"]["rows"]
    total = sum(t["heap"] + t["index"] for t in footprint.values())
    database_bytes = int(fetch(url, "SELECT pg_database_size(current_database())")[0][0])
    warm(url)
    searches = qido(url, counts, queries)
    if not keep:
        execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "instances": instances,
        "counts": counts,
        "generation_seconds": round(generated),
        "footprint": footprint,
        "bytes_per_instance": round(total / instances),
        "database_bytes": database_bytes,
        "qido": searches,
    }


# --- output ------------------------------------------------------------------------------------


def print_nodes(results: list[dict[str, Any]]) -> None:
    print(
        f"\n{'nodes':>5}{'instances':>11}{'s':>8}{'inst/s':>9}{'errors':>8}"
        f"{'lock-wait samples':>19}{'max waiting':>13}{'deadlocks':>11}{'lost':>6}{'dup':>5}"
    )
    for r in results:
        print(
            f"{r['nodes']:>5}{r['instances']:>11}{r['seconds']:>8}{r['instances_per_s']:>9}"
            f"{r['error_count']:>8}{r['lock_wait_samples']:>10} of {r['samples']:<6}"
            f"{r['max_waiting_backends']:>13}{r['deadlocks']:>11}{r['lost'] or 0:>6}"
            f"{r['duplicated']:>5}"
        )
        for what, n in r["lock_waits"].items():
            print(f"      waited {n} samples: {what}")
        for e in r["errors"]:
            print(f"      error: {e}")


def print_footprint(footprint: dict[str, dict[str, int]], instances: int) -> None:
    print(f"\n{'table':<16}{'rows':>14}{'heap MB':>10}{'index MB':>10}{'B/inst':>9}")
    for name in TABLES:
        t = footprint.get(name)
        if t is None:
            continue
        per = (t["heap"] + t["index"]) / max(1, instances)
        print(
            f"{name:<16}{t['rows']:>14,}{t['heap'] / 1e6:>10.1f}{t['index'] / 1e6:>10.1f}"
            f"{per:>9.0f}"
        )


def main() -> int:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,2,4", help="node counts to run (1,2,4)")
    parser.add_argument("--instances", type=int, default=600, help="instances sent per run")
    parser.add_argument("--per-request", type=int, default=10, help="instances per STOW-RS")
    parser.add_argument("--size", type=int, default=128, help="pixels per side (16-bit CT)")
    parser.add_argument("--clients", type=int, default=4, help="STOW-RS clients at once")
    parser.add_argument("--catalogue", default="1000000", help="catalogue sizes (instances)")
    parser.add_argument("--queries", type=int, default=200, help="QIDO-RS queries per kind")
    parser.add_argument("--skip-nodes", action="store_true")
    parser.add_argument("--skip-catalogue", action="store_true")
    parser.add_argument("--pgdata", type=Path, help="PostgreSQL cluster to use and keep")
    parser.add_argument("--keep", action="store_true", help="keep generated catalogues")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vna-scale-"))
    pg = EmbeddedPostgres(args.pgdata or root / "pg", database="vna")
    admin_url = pg.start()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
    }
    failed = False
    try:
        if not args.skip_nodes:
            from moto.server import ThreadedMotoServer

            port = free_port()
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            try:
                bodies = corpus(args.instances, args.per_request, args.size)
                print(
                    f"{sum(c for _, _, c in bodies)} instances of {args.size}x{args.size}"
                    f" 16-bit CT per run, {args.per_request} per STOW-RS request,"
                    f" {args.clients} clients, S3 on moto"
                )
                runs = []
                for n in [int(x) for x in args.nodes.split(",")]:
                    r = nodes_run(
                        root, admin_url, f"http://127.0.0.1:{port}", n, bodies, args.clients
                    )
                    runs.append(r)
                    print_nodes([r])
                    failed |= bool(
                        r["deadlocks"] or r["duplicated"] or r["lost"] or r["rows_without_object"]
                    )
                results["nodes"] = runs
                print("\nsummary:")
                print_nodes(runs)
                last = runs[-1]
                print(f"\nreal ingest footprint ({last['nodes']} nodes run):")
                print_footprint(last["footprint"], last["catalogued"])
            finally:
                moto.stop()
        if not args.skip_catalogue:
            results["catalogue"] = []
            for size in [int(x) for x in args.catalogue.split(",")]:
                c = catalogue_run(admin_url, size, args.queries, args.keep or bool(args.pgdata))
                results["catalogue"].append(c)
                print(
                    f"\ncatalogue of {c['instances']:,} instances (generated in"
                    f" {c['generation_seconds']} s): {c['bytes_per_instance']} bytes per"
                    f" instance in the growing tables, database {c['database_bytes'] / 1e9:.2f} GB"
                )
                print_footprint(c["footprint"], c["instances"])
                print(f"\n{'query':<24}{'p50 ms':>10}{'p95 ms':>10}{'mean hits':>11}")
                for kind, f in c["qido"].items():
                    print(
                        f"{kind:<24}{f['p50_ms']:>10.2f}{f['p95_ms']:>10.2f}{f['mean_hits']:>11.1f}"
                    )
    finally:
        pg.stop()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
        if not args.pgdata:
            shutil.rmtree(root, ignore_errors=True)
    if failed:
        print("\nFAILED: something was lost, duplicated or deadlocked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
