"""Who may do what, and what was done: API tokens and roles (:mod:`.tokens`), their resolution
for a request (:mod:`.authn`), the audit trail of stores and reads (:mod:`.audit`) exported as
DICOM audit messages (:mod:`.audit_message`, PS3.15 A.5), and TLS contexts (:mod:`.tls`).

Protocol-free like the ingest pipeline: the gateways extract a bearer token or a calling AE
title and call in here.
"""
