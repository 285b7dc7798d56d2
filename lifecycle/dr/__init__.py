"""Disaster recovery, the engine: replication to the ``[[replicas]]`` (:mod:`.replication`),
the state of the replicas (:mod:`.status`), failover drills (:mod:`.drill`), failover and
failback (:mod:`.failover`), fixity checks (:mod:`.fixity`), rebuilding the catalogue from the
objects (:mod:`.catalogue_rebuild`), and their reports (:mod:`.report`, :mod:`.json_form`).

Imports run one way: this package uses ``vna`` (the archive, its stores and the verified-copy
primitives of ``vna.recovery``, which the running archive itself needs to serve from a
replica); nothing in ``vna`` imports it but the command line, lazily.
"""
