"""Disaster recovery, the engine: replication to the ``[[replicas]]`` (:mod:`.replication`),
failover drills (:mod:`.drill`), failover and failback (:mod:`.drill` until split), fixity
checks (:mod:`.fixity`), rebuilding the catalogue from the objects (:mod:`.catalogue_rebuild`)
and the reports of all of these (:mod:`.report`).

Imports run one way: this package uses ``vna`` (the archive, its stores and the verified-copy
primitives of ``vna.recovery``, which the running archive itself needs to serve from a
replica); nothing in ``vna`` imports it but the command line, lazily.
"""
