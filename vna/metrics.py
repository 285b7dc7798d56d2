"""Prometheus metrics of one archive process (exposed at ``GET /metrics``).

Each Archive owns its own registry so that several archives in one process (tests) do not
share counters.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: Set by the supervisor for its workers (vna/supervisor.py); prometheus_client reads it at
#: import and keeps each process's values in files there, which any worker sums on a scrape.
_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Lifecycle job states as /metrics reports them: ``ready`` (queued, due now), ``waiting``
#: (queued for later: a retry's back-off), ``running`` and ``dead`` (failed every attempt, for
#: ``vna lifecycle retry``).
JOB_STATES = ("ready", "waiting", "running", "dead")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_stored = Counter(
            "vna_instances_stored",
            "Instances newly stored, by protocol and source",
            ["protocol", "source"],
            registry=r,
        )
        self.instances_duplicate = Counter(
            "vna_instances_duplicate",
            "Identical resends acknowledged without storing anything new",
            ["protocol", "source"],
            registry=r,
        )
        self.instance_failures = Counter(
            "vna_instance_failures",
            "Instances refused, by protocol and reason",
            ["protocol", "reason"],
            registry=r,
        )
        self.bytes_stored = Counter(
            "vna_bytes_stored", "Bytes of newly stored instances", ["protocol"], registry=r
        )
        self.ingest_seconds = Histogram(
            "vna_ingest_seconds",
            "Time to ingest one instance (parse, write, catalogue)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.request_seconds = Histogram(
            "vna_http_request_seconds",
            "DICOMweb request latency by route and status",
            ["method", "route", "status"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
            registry=r,
        )
        self.catalogue_instances = Gauge(
            "vna_catalogue_instances",
            "Instances in the catalogue",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.catalogue_bytes = Gauge(
            "vna_catalogue_bytes",
            "Bytes of the instances in the catalogue",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.audit_failures = Counter(
            "vna_audit_write_failures", "Audit records that could not be written", registry=r
        )
        # Disaster recovery (vna/recovery, lifecycle/replication.py): per replica store.
        self.replica_backlog_instances = Gauge(
            "vna_replica_backlog_instances",
            "Instances without a verified copy on the replica",
            ["replica"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.replica_backlog_bytes = Gauge(
            "vna_replica_backlog_bytes",
            "Stored bytes of the instances without a verified copy on the replica",
            ["replica"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.replica_lag_seconds = Gauge(
            "vna_replica_lag_seconds",
            "Age of the oldest instance without a verified copy on the replica (the RPO now)",
            ["replica"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.replica_instances = Gauge(
            "vna_replica_instances",
            "Instances with a verified copy on the replica",
            ["replica"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.retrieve_fallbacks = Counter(
            "vna_retrieve_fallbacks",
            "Retrieves served by another store because the active store failed",
            ["store", "reason"],
            registry=r,
        )
        # Reads that heal themselves (vna/retrieve.py, lifecycle/dr/read_repair.py).
        self.damaged_reads = Counter(
            "vna_damaged_reads",
            "Reads that found a stored copy missing, corrupt or unreadable (each queues a repair"
            " when replicas are declared)",
            ["store", "outcome"],
            registry=r,
        )
        self.object_repairs = Counter(
            "vna_object_repairs",
            "Repair jobs done on damaged copies: repaired (copied back from a replica), intact"
            " (read back verified), gone (no longer used)",
            ["store", "resolution"],
            registry=r,
        )

        self.lifecycle_jobs = Gauge(
            "vna_lifecycle_jobs",
            "Lifecycle queue depth: jobs by type and state (ready, waiting, running, dead)",
            ["kind", "state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._job_kinds: set[str] = set()
        self.dimse_associations = Counter(
            "vna_dimse_associations",
            "DIMSE associations requested of the archive, by result"
            " (accepted, rejected-calling-ae, rejected-called-ae, rejected-other)",
            ["result"],
            registry=r,
        )
        self.dimse_operations = Counter(
            "vna_dimse_operations",
            "DIMSE operations answered, by type (C-STORE, C-FIND...) and final status (hex)",
            ["operation", "status"],
            registry=r,
        )
        self.storage_commitments = Gauge(
            "vna_storage_commitments",
            "Storage Commitment requests: pending (report not yet sent) and failed (a report"
            " listing failed instances, or one that could not be delivered)",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.forwarded_instances = Gauge(
            "vna_forward_instances",
            "Instances forwarded by [[forward]] rules, by destination and state (queued, sent,"
            " failed); failed ones were refused by the destination (alarm on them)",
            ["destination", "state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.notification_events = Gauge(
            "vna_notification_events",
            "Events of [[notifications]] subscriptions, by subscription and state (pending,"
            " delivered, dead); dead ones were given up after dead_after_seconds (alarm on them)",
            ["target", "state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.retrieve_bytes = Counter(
            "vna_retrieve_bytes",
            "Bytes of stored instances read back (WADO-RS, C-MOVE, C-GET, corrections)",
            registry=r,
        )

    def set_lifecycle_jobs(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """The queue depth from (kind, state, jobs) rows; a kind or state absent from them is
        0 now (a gauge that kept its last value would show a drained queue as still full)."""
        current = {(kind, state): jobs for kind, state, jobs in counts}
        self._job_kinds |= {kind for kind, _ in current}
        for kind in self._job_kinds:
            for state in JOB_STATES:
                self.lifecycle_jobs.labels(kind, state).set(current.get((kind, state), 0))

    def set_forwarded(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """Forwarded instances from (destination, state, instances) rows; absent ones are 0."""
        current = {(dest, state): n for dest, state, n in counts}
        for dest in {d for d, _ in current}:
            for state in ("queued", "sent", "failed"):
                self.forwarded_instances.labels(dest, state).set(current.get((dest, state), 0))

    def set_notifications(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """Notification events from (target, state, events) rows; absent ones are 0."""
        current = {(target, state): n for target, state, n in counts}
        for target in {t for t, _ in current}:
            for state in ("pending", "delivered", "dead"):
                self.notification_events.labels(target, state).set(current.get((target, state), 0))

    def render(self) -> bytes:
        if _MULTIPROCESS:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
