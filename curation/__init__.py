"""Curation: raw footage into scored, filtered, extracted shot clips.

Kept light on purpose: importing `curation` (or `curation.schema`) pulls in only the standard
library and pyarrow, so `training/` and `rushes --help` can use the schema without cv2 or av.
"""
