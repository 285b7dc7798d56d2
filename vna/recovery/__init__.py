"""The archive's object stores as disaster recovery sees them, the part the running archive
itself needs: the set of stores (primary and replicas) and which one is active
(:mod:`.sites`), verified copies between them and their records (:mod:`.replicas`), and the
pure rules of reading and judging copies (:mod:`.policy`).  ``vna.archive`` opens the active
store through it and ``vna.retrieve`` falls back to a replica with it.

The disaster-recovery engine (replication jobs, drills, failover and failback, fixity,
catalogue rebuild, reports) is ``lifecycle.dr``, which imports this package; nothing here
imports ``lifecycle``.
"""
