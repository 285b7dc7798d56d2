"""DICOM knowledge: header parsing, normalisation, DICOM JSON, query parameter parsing."""
