"""The one protocol-free ingest pipeline that DICOMweb, DIMSE and folder import all call."""
