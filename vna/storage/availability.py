"""Instance Availability (0008,0056) of stored instances, from their tiers: pure, no I/O.

PS3.4 C.4.1.1.3.2 defines how rapidly instances become available for a C-MOVE or C-GET:
ONLINE (immediately), NEARLINE (from relatively slow media, or after a conversion that takes
time), OFFLINE (by manual intervention), UNAVAILABLE.  For a set of instances (a study or a
series) it is "the availability of the least rapidly available".  QIDO-RS returns the same
attribute (PS3.18 10.6.3).

Here: an object in a tier whose store must restore it before it can be read (S3 GLACIER,
DEEP_ARCHIVE; ``ObjectStore.offline_tiers``) is OFFLINE unless a restored copy is readable (a
retrieve queues the restore, and the requester retries: the nearest DICOM term for "not
without an intervention"); the cold tier otherwise (S3 GLACIER_IR, the filesystem store's cold
root) is NEARLINE; hot and warm are ONLINE.
"""

from __future__ import annotations

from collections.abc import Iterable

ONLINE = "ONLINE"
NEARLINE = "NEARLINE"
OFFLINE = "OFFLINE"
#: Most to least rapidly available.
_ORDER = (ONLINE, NEARLINE, OFFLINE)
_COLD = "cold"


def tier_availability(tier: str, offline_tiers: frozenset[str]) -> str:
    """The availability of an unrestored object in ``tier``."""
    if tier in offline_tiers:
        return OFFLINE
    if tier == _COLD:
        return NEARLINE
    return ONLINE


def least_available(unrestored_tiers: Iterable[str], offline_tiers: frozenset[str]) -> str:
    """The availability of a set of instances, given the tiers of those without a readable
    restored copy (a restored instance is ONLINE, so it cannot lower the least)."""
    ranks = [_ORDER.index(tier_availability(t, offline_tiers)) for t in unrestored_tiers]
    return _ORDER[max(ranks, default=0)]
