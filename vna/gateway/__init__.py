"""Protocol adapters: DICOMweb (aiohttp) and DIMSE (pynetdicom).  Thin: they identify the
sender, call the ingest pipeline or the retriever, and translate errors through status.py."""
