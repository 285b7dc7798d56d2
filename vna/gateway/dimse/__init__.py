"""DIMSE gateway (PS3.7): C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET over pynetdicom.

Thin like the DICOMweb gateway: C-STORE calls the same ingest function as STOW-RS, C-FIND the
same search as QIDO-RS, C-MOVE and C-GET the same stored bytes as WADO-RS.
"""

from vna.gateway.dimse.listener import DimseListener

__all__ = ["DimseListener"]
