"""DICOM (DIMSE) service class provider: C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET served by
the archive's services, like DICOMweb. `server.py` runs the AE; one module per service."""
