"""Prometheus metrics of one archive process (exposed at ``GET /metrics``).

Each Archive owns its own registry so that several archives in one process (tests) do not
share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
            "vna_catalogue_instances", "Instances in the catalogue", registry=r
        )
        self.catalogue_bytes = Gauge(
            "vna_catalogue_bytes", "Bytes of the instances in the catalogue", registry=r
        )
        self.audit_failures = Counter(
            "vna_audit_write_failures", "Audit records that could not be written", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
