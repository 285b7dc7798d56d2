"""Several archive nodes on one catalogue and one S3 bucket (issue 21, items 1 and 2).

Real ``vna serve`` processes (tests/multinode.py) on the test's PostgreSQL database and a bucket
on the moto S3 server, driven by real clients (STOW-RS over HTTP, C-STORE with pynetdicom)
round-robin across the nodes.  What they assert is what a hospital would notice: nothing lost
(every acknowledged instance retrievable from every node), nothing duplicated (one patient,
study, instance row and object each), every conflict decided once, and no deadlock.

The default suite runs short versions; ``make soak`` runs the longer ones (marker ``soak``).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydicom.dataset import Dataset

from tests.factory import ct_study
from tests.multinode import (
    Cluster,
    Node,
    c_store,
    retrieve_instance,
    s3_keys,
    stow,
    stow_outcome,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vna-multinode-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(cluster_root: Path, database_url: str, s3_url: str) -> Iterator[Cluster]:
    # No grace before unused objects are deleted: the tests look at the bucket right after.
    made = Cluster(
        cluster_root, database_url, s3_url, env={"VNA_LIFECYCLE_DELETE_GRACE_SECONDS": "0"}
    )
    try:
        yield made
    finally:
        made.shutdown()


def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def deadlocks(url: str) -> int:
    """Deadlocks PostgreSQL detected in this database since it was created."""
    return int(
        sql(url, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][
            "deadlocks"
        ]
    )


def catalogue_counts(url: str) -> dict[str, int]:
    row = sql(
        url,
        "SELECT (SELECT count(*) FROM patients) AS patients,"
        " (SELECT count(*) FROM studies) AS studies,"
        " (SELECT count(*) FROM series) AS series,"
        " (SELECT count(*) FROM instances) AS instances,"
        " (SELECT count(DISTINCT sop_uid) FROM instances) AS distinct_sops,"
        " (SELECT count(DISTINCT object_key) FROM instances) AS distinct_keys,"
        " (SELECT count(*) FROM conflicts) AS conflicts",
    )[0]
    return dict(row)


def assert_every_row_has_its_object(cluster: Cluster) -> set[str]:
    """No catalogue row without its object; returns the keys the catalogue refers to."""
    keys = set(s3_keys(cluster.storage_url, "sha256/"))
    referenced = {
        r["object_key"]
        for r in sql(
            cluster.database_url,
            "SELECT object_key FROM instances UNION SELECT object_key FROM instance_versions"
            " UNION SELECT object_key FROM conflicts",
        )
    }
    missing = referenced - keys
    assert not missing, f"catalogue rows without their object: {sorted(missing)[:5]}"
    return referenced


def assert_unfiled_objects_are_cleaned_up(cluster: Cluster, referenced: set[str]) -> None:
    """Keys in the bucket no row refers to each have a deletion queued; after one lifecycle
    pass the bucket holds exactly the referenced objects."""
    extra = set(s3_keys(cluster.storage_url, "sha256/")) - referenced
    queued = {
        r["key"]
        for r in sql(
            cluster.database_url,
            "SELECT payload->>'object_key' AS key FROM jobs"
            " WHERE kind = 'delete-object' AND state = 'queued'",
        )
    }
    assert extra <= queued, sorted(extra - queued)[:5]
    code, log = cluster.worker_once()
    assert code == 0, log
    assert set(s3_keys(cluster.storage_url, "sha256/")) == referenced
    assert_every_row_has_its_object(cluster)


def assert_retrievable_everywhere(
    cluster: Cluster, acknowledged: dict[str, tuple[str, str, bytes]]
) -> None:
    """Every acknowledged instance (sop -> study, series, pixel bytes) from every node."""
    for node in cluster.nodes:
        for sop, (study, series, pixels) in acknowledged.items():
            r = retrieve_instance(node, study, series, sop)
            assert r.status_code == 200, (node.name, sop, r.status_code, r.text[:200])
            assert pixels in r.content, (node.name, sop, "not the bytes sent")


def _fingerprint(ds: Dataset) -> tuple[str, str, bytes]:
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), bytes(ds.PixelData)


# --- the same studies sent to several nodes at once ---------------------------------------------


def send_everywhere_at_once(cluster: Cluster, studies: list[list[Dataset]]) -> dict[str, Any]:
    """Each study sent to every node at the same moment, over STOW-RS to half of them and
    C-STORE to the other half; returns what the clients were told."""
    acked: set[str] = set()
    refused: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(cluster.nodes))

    def send(index: int, node: Node) -> None:
        for study in studies:
            barrier.wait(timeout=120)
            if index % 2 == 0:
                r = stow(node, study)
                ok, failed = stow_outcome(r)
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{node.name} STOW {r.status_code} {r.text[:200]}")
                    acked.update(ok)
                    refused.extend(failed)
            else:
                statuses = c_store(node, study)
                with lock:
                    for sop, status in statuses.items():
                        if status == 0:
                            acked.add(sop)
                        else:
                            errors.append(f"{node.name} C-STORE {sop} status {status}")

    with ThreadPoolExecutor(len(cluster.nodes)) as pool:
        list(pool.map(lambda a: send(*a), enumerate(cluster.nodes)))
    return {"acked": acked, "refused": refused, "errors": errors}


def test_the_same_studies_sent_to_every_node_at_once_are_stored_once(cluster: Cluster) -> None:
    cluster.add_nodes(3)
    studies = [ct_study(patient_id=f"MN{i % 2}", series=2, slices=3, size=32) for i in range(4)]
    sent = {str(ds.SOPInstanceUID): _fingerprint(ds) for study in studies for ds in study}

    outcome = send_everywhere_at_once(cluster, studies)
    assert outcome["errors"] == [], outcome["errors"][:5]
    assert outcome["refused"] == []
    # Every copy was acknowledged (a resend is a success), each instance stored once.
    assert outcome["acked"] == set(sent)
    counts = catalogue_counts(cluster.database_url)
    assert counts == {
        "patients": 2,
        "studies": 4,
        "series": 8,
        "instances": len(sent),
        "distinct_sops": len(sent),
        "distinct_keys": len(sent),
        "conflicts": 0,
    }
    # One object per instance in the bucket: the objects nodes wrote for an instance another
    # node filed first (other File Meta, so another key) are queued for deletion, and gone
    # once the lifecycle workers ran.
    referenced = assert_every_row_has_its_object(cluster)
    assert_unfiled_objects_are_cleaned_up(cluster, referenced)
    # Every attempt is audited; one per instance stored it, the others were resends.
    audited = sql(
        cluster.database_url,
        "SELECT count(*) FILTER (WHERE NOT detail ? 'duplicate') AS stored,"
        " count(*) FILTER (WHERE detail ? 'duplicate') AS resent"
        " FROM audit WHERE action = 'store' AND outcome = 'success'",
    )[0]
    copies = len(sent) * len(cluster.nodes)
    assert dict(audited) == {"stored": len(sent), "resent": copies - len(sent)}
    assert_retrievable_everywhere(cluster, sent)
    assert deadlocks(cluster.database_url) == 0


def test_a_conflict_sent_to_two_nodes_at_once_is_decided_once(cluster: Cluster) -> None:
    """Two versions of the same instances (other content, same SOP Instance UIDs) arrive at two
    nodes at the same moment: one version is stored, the other refused (source policy
    "reject"), never two stored versions; resends decide nothing again."""
    cluster.add_nodes(2)
    first = ct_study(patient_id="CONF", series=1, slices=4, size=32)
    second = []
    for ds in first:
        other = copy.deepcopy(ds)
        other.PixelData = hashlib.sha256(bytes(ds.PixelData)).digest() * (len(ds.PixelData) // 32)
        second.append(other)
    results: list[tuple[set[str], set[str]]] = []
    barrier = threading.Barrier(2)

    def send(node: Node, study: list[Dataset]) -> None:
        barrier.wait(timeout=60)
        r = stow(node, study)
        assert r.status_code in (200, 202, 409), r.text[:500]
        results.append(stow_outcome(r))

    threads = [
        threading.Thread(target=send, args=(cluster.nodes[0], first)),
        threading.Thread(target=send, args=(cluster.nodes[1], second)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2, results
    sops = {str(ds.SOPInstanceUID) for ds in first}
    # Each instance: acknowledged on exactly one node and refused on the other.
    for sop in sops:
        acked = sum(sop in ok for ok, _ in results)
        refused = sum(sop in failed for _, failed in results)
        assert (acked, refused) == (1, 1), (sop, results)
    counts = catalogue_counts(cluster.database_url)
    assert counts["instances"] == 4 and counts["conflicts"] == 0, counts
    audited = sql(
        cluster.database_url,
        "SELECT outcome, count(*) AS n FROM audit WHERE action = 'store' GROUP BY outcome",
    )
    assert {r["outcome"]: r["n"] for r in audited} == {"success": 4, "failure": 4}
    # The refused version's objects do not stay in the bucket.
    assert_unfiled_objects_are_cleaned_up(cluster, assert_every_row_has_its_object(cluster))

    # Resending both versions to both nodes decides nothing again.
    for node in cluster.nodes:
        for study in (first, second):
            ok, failed = stow_outcome(stow(node, study))
            assert ok | failed == sops
    again = catalogue_counts(cluster.database_url)
    assert again == counts, again
    assert deadlocks(cluster.database_url) == 0


# --- nodes starting together -------------------------------------------------------------------


def test_two_nodes_starting_at_once_on_an_empty_database_migrate_once(
    cluster_root: Path, pg_admin_url: str, s3_url: str
) -> None:
    from tests.conftest import with_database

    name = f"vna_empty_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    sql(pg_admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(pg_admin_url, name)
    cluster = Cluster(cluster_root, url, s3_url)
    try:
        nodes = cluster.add_nodes(2, start=False)
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        applied = sql(url, "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version")
        from vna.catalog.migrate import available

        assert sorted(r["version"] for r in applied) == [v for v, _, _ in available()]
        assert all(r["n"] == 1 for r in applied)
        # Both serve: one study through each, found through the other.
        study = ct_study(patient_id="BOOT", series=1, slices=2, size=32)
        assert stow(nodes[0], study[:1]).status_code == 200
        assert stow(nodes[1], study[1:]).status_code == 200
        for node in nodes:
            for ds in study:
                r = retrieve_instance(
                    node, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
                )
                assert r.status_code == 200
        for node in nodes:
            assert "ERROR" not in node.log() and "Traceback" not in node.log(), node.log()
    finally:
        cluster.shutdown()
        sql(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- a node killed while clients send -----------------------------------------------------------


def kill_while_sending(cluster: Cluster, seconds: float, kills: int, seed: int) -> None:
    """4 clients (2 STOW-RS, 2 C-STORE) send small studies round-robin across the nodes for
    ``seconds`` while one node at a time is killed with SIGKILL at random moments and started
    again.  Then: every acknowledged instance retrievable from every node, no catalogue row
    without its object, orphans only where ``vna verify --all`` lists them, no deadlock."""
    rng = random.Random(seed)
    stop = threading.Event()
    acked: dict[str, tuple[str, str, bytes]] = {}
    lock = threading.Lock()
    unexpected: list[str] = []

    def client(kind: str, n: int) -> None:
        while not stop.is_set():
            node = cluster.next_node()
            study = ct_study(patient_id=f"K{n}", series=1, slices=3, size=32)
            try:
                if kind == "stow":
                    r = stow(node, study, timeout=30)
                    ok, failed = stow_outcome(r)
                    if failed:
                        with lock:
                            unexpected.append(f"{node.name} refused {sorted(failed)[:1]}")
                    done = ok
                else:
                    done = {sop for sop, st in c_store(node, study).items() if st == 0}
            except Exception:  # the node died under the request: not acked
                done = set()
            with lock:
                for ds in study:
                    if str(ds.SOPInstanceUID) in done:
                        acked[str(ds.SOPInstanceUID)] = _fingerprint(ds)

    threads = [
        threading.Thread(target=client, args=(kind, i))
        for i, kind in enumerate(["stow", "stow", "c-store", "c-store"])
    ]
    for t in threads:
        t.start()
    try:
        interval = seconds / (kills + 1)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.0) * interval)
            victim = rng.choice(cluster.nodes)
            victim.kill()
            time.sleep(rng.uniform(0.1, 0.5))
            victim.start()
            victim.wait_ready()
        time.sleep(max(0.5, interval / 2))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert unexpected == [], unexpected[:5]
    assert len(acked) > 0

    counts = catalogue_counts(cluster.database_url)
    # Nothing acknowledged is missing; nothing is in the catalogue twice.
    stored = {r["sop_uid"] for r in sql(cluster.database_url, "SELECT sop_uid FROM instances")}
    assert set(acked) <= stored, sorted(set(acked) - stored)[:5]
    assert counts["instances"] == counts["distinct_sops"] == counts["distinct_keys"]
    referenced = assert_every_row_has_its_object(cluster)
    assert_retrievable_everywhere(cluster, acked)

    # vna verify --all: every catalogued object reads back; the only other keys in the bucket
    # are the orphans a kill between object write and catalogue commit leaves, and it lists
    # exactly those.
    result = cluster.cli("verify", "--all", "--format", "json")
    import json

    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert report["problems"] == []
    assert report["checked"] == counts["instances"]
    in_bucket = set(s3_keys(cluster.storage_url, "sha256/"))
    assert set(report["orphans"]) == in_bucket - referenced
    assert deadlocks(cluster.database_url) == 0


def test_a_node_killed_while_four_clients_send_loses_nothing(cluster: Cluster) -> None:
    cluster.add_nodes(2)
    kill_while_sending(cluster, seconds=12, kills=2, seed=21)


@pytest.mark.soak
def test_nodes_killed_at_random_for_minutes_lose_nothing(cluster: Cluster) -> None:
    cluster.add_nodes(3)
    seconds = float(os.environ.get("VNA_MULTINODE_SOAK_SECONDS", "180"))
    kill_while_sending(cluster, seconds=seconds, kills=max(3, int(seconds // 10)), seed=2121)


@pytest.mark.soak
def test_many_studies_sent_to_four_nodes_at_once_are_stored_once(cluster: Cluster) -> None:
    cluster.add_nodes(4)
    studies = [ct_study(patient_id=f"MS{i % 5}", series=2, slices=4, size=32) for i in range(20)]
    sent = {str(ds.SOPInstanceUID): _fingerprint(ds) for study in studies for ds in study}
    outcome = send_everywhere_at_once(cluster, studies)
    assert outcome["errors"] == [] and outcome["refused"] == []
    assert outcome["acked"] == set(sent)
    counts = catalogue_counts(cluster.database_url)
    assert counts["patients"] == 5 and counts["studies"] == 20
    assert counts["instances"] == counts["distinct_keys"] == len(sent)
    assert_unfiled_objects_are_cleaned_up(cluster, assert_every_row_has_its_object(cluster))
    assert_retrievable_everywhere(cluster, sent)
    assert deadlocks(cluster.database_url) == 0


# --- lifecycle jobs with two workers ------------------------------------------------------------

LIFECYCLE_TOML = """
[lifecycle]
poll_seconds = 1
delete_grace_seconds = 0
evaluate_every_seconds = 1

[compression]
level = 3
min_size = 1024

[[retention_rules]]
name = "short"
retain_years = 1

[[replicas]]
name = "dr"
storage_url = "{replica}"
"""

TIERING_TOML = """
[[tiering_rules]]
name = "old"
tier = "warm"
min_study_age_days = 30
"""


def wait_until_idle(url: str, timeout: float = 120) -> None:
    """No job queued or running (the lifecycle workers have done everything ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = sql(url, "SELECT count(*) AS n FROM jobs WHERE state IN ('queued', 'running')")[0][
            "n"
        ]
        if busy == 0:
            time.sleep(1.5)  # a scheduler pass may queue follow-ups: look once more
            if sql(url, "SELECT count(*) AS n FROM jobs WHERE state <> 'done'")[0]["n"] == 0:
                return
        time.sleep(0.5)
    rows = sql(url, "SELECT kind, state, last_error FROM jobs WHERE state <> 'done' LIMIT 5")
    raise AssertionError(f"jobs still waiting after {timeout} s: {[dict(r) for r in rows]}")


def wait_for(url: str, query: str, expected: Any, timeout: float = 120) -> None:
    """Until ``query``'s one value is ``expected`` (the workers start, then tick, then work)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = sql(url, query)[0][0]
        if value == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{query}: {value!r} after {timeout} s, expected {expected!r}")


def jobs_done(url: str) -> dict[str, int]:
    rows = sql(url, "SELECT kind, count(*) AS n FROM jobs WHERE state = 'done' GROUP BY kind")
    return {r["kind"]: r["n"] for r in rows}


def test_lifecycle_jobs_are_each_done_once_by_two_workers(
    cluster_root: Path, database_url: str, s3_endpoint: str, s3_url: str
) -> None:
    """Compression, replication, tiering and a retention approval with two ``vna lifecycle
    run`` workers (and two approvals at once): every job done once, every side effect once."""
    import boto3

    replica_bucket = f"vna-replica-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=replica_bucket)
    replica_url = f"s3://{replica_bucket}?endpoint_url={s3_endpoint}&region=us-east-1"
    config = LIFECYCLE_TOML.format(replica=replica_url)
    cluster = Cluster(cluster_root, database_url, s3_url, config_toml=config)
    try:
        cluster.add_nodes(2)
        studies = [ct_study(patient_id=f"LC{i}", series=1, slices=3, size=64) for i in range(4)]
        for study in studies:
            assert stow(cluster.next_node(), study).status_code == 200
        n = sum(len(s) for s in studies)

        # Compression and replication: two workers on the queue.
        cluster.add_workers(2)
        wait_for(database_url, "SELECT count(*) FROM replicas", n)
        wait_until_idle(database_url)
        rows = sql(database_url, "SELECT object_key, compression FROM instances")
        assert len(rows) == n and all(r["compression"] != "none" for r in rows), rows
        keys = {r["object_key"] for r in rows}
        # Each compressed once, each original deleted once, each copied to the replica once.
        done = jobs_done(database_url)
        assert done.get("instance-stored") == n, done
        assert done.get("delete-object") == n, done
        assert done.get("replicate") == n, done
        assert sql(database_url, "SELECT max(attempts) AS m FROM jobs")[0]["m"] == 1
        copies = sql(database_url, "SELECT store, object_key FROM replicas")
        assert sorted(r["object_key"] for r in copies) == sorted(keys)
        assert set(s3_keys(s3_url, "sha256/")) == keys
        assert set(s3_keys(replica_url, "sha256/")) == keys
        for worker in cluster.workers:
            assert worker.stop() == 0, worker.log()

        # Tiering: the rule added, two workers again; each study moved once.
        cluster.add_workers(2, VNA_CONFIG_TOML=config + TIERING_TOML)
        wait_for(database_url, "SELECT count(*) FROM instances WHERE tier = 'warm'", n)
        wait_until_idle(database_url)
        tiers = sql(database_url, "SELECT DISTINCT tier FROM instances")
        assert [r["tier"] for r in tiers] == ["warm"]
        assert jobs_done(database_url).get("tier-study") == len(studies)
        assert sql(database_url, "SELECT max(attempts) AS m FROM jobs")[0]["m"] == 1
        bucket = urlparse_bucket(s3_url)
        for key in keys:
            head = s3.head_object(Bucket=bucket, Key=key)
            assert head.get("StorageClass") == "STANDARD_IA", (key, head.get("StorageClass"))

        # Retention: one review, approved by two administrators at the same moment while the
        # workers run; each study deleted once, on every store.
        review = cluster.cli("retention", "review", "--format", "json")
        assert review.returncode == 0, review.stderr
        import json

        review_id = json.loads(review.stdout)["review"]
        approvals = [
            cluster.cli_start("retention", "approve", str(review_id), "--as", name, "--yes")
            for name in ("Jane Roe", "John Doe")
        ]
        outputs = [p.communicate(timeout=120) for p in approvals]
        assert all(p.returncode == 0 for p in approvals), outputs
        wait_until_idle(database_url)
        audited = sql(
            database_url,
            "SELECT action, study_uid, count(*) AS n FROM audit"
            " WHERE action IN ('retention-delete', 'retention-approve')"
            " GROUP BY action, study_uid",
        )
        deletes = {r["study_uid"]: r["n"] for r in audited if r["action"] == "retention-delete"}
        assert deletes == {str(s[0].StudyInstanceUID): 1 for s in studies}, deletes
        approves = [r["n"] for r in audited if r["action"] == "retention-approve"]
        assert approves == [1], approves
        assert sql(database_url, "SELECT count(*) AS n FROM instances")[0]["n"] == 0
        assert s3_keys(s3_url, "sha256/") == []
        assert s3_keys(replica_url, "sha256/") == []
        assert deadlocks(database_url) == 0
    finally:
        cluster.shutdown()


def urlparse_bucket(storage_url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(storage_url).netloc
