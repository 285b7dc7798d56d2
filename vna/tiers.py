"""Storage tiers, warmest first: a vocabulary shared by the configuration, the object stores
and the lifecycle engine.  A leaf module (it imports nothing), so that any layer may name a
tier without depending on storage or settings.

Ingest writes to "hot"; the lifecycle engine moves objects to "warm" and "cold" (S3 storage
classes, or separate roots of the filesystem store).
"""

TIERS = ("hot", "warm", "cold")
