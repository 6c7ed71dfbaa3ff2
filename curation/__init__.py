"""Curation: raw footage into scored, filtered, extracted shot clips.

Its own stages are the modules beside `core/`; `curation.core` is the kernel every package shares.
Importing `curation` (or `curation.core.schema`) pulls in only the standard library and pyarrow, so
`training/` and `rushes --help` can use the schema without cv2 or av.
"""
