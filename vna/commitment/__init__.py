"""Storage Commitment Push Model (PS3.4 Annex J): the archive's side of a PACS asking
whether it may delete its own copies.

``model`` reads an N-ACTION request and writes the N-EVENT-REPORT (pydicom only);
``check`` decides, per referenced instance, whether the archive takes responsibility for it
(catalogued, object read back and its SHA-256 verified, and on enough replicas);
``service`` records requests and reports (catalogue, audit) for the DIMSE handler and the
``commitment-report`` job; ``sender`` sends a report on a new association.
"""
