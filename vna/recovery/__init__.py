"""Disaster recovery on the archive's side: the set of object stores (primary and replicas)
and which one is active, verified copies between them, fixity checks, and rebuilding the
catalogue from the objects alone.  Replication jobs, drills and failover live in
``lifecycle`` (``lifecycle.replication``, ``lifecycle.dr``), which imports this package.
"""
