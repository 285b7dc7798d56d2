"""Prometheus metrics of one archive process (exposed at ``GET /metrics``).

Each Archive owns its own registry so that several archives in one process (tests) do not
share counters.
"""

from __future__ import annotations

import os

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

    def render(self) -> bytes:
        if _MULTIPROCESS:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
