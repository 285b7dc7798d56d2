"""Administration of federation: quarantined conflicts, patient links, corrections and merges.

Protocol-free like the ingest pipeline: the command line (``vna conflicts``, ``vna patients``)
and the admin HTTP endpoints (``vna/gateway/admin.py``) both call these functions.  Every
change is audited and reversible.
"""
