"""The kernel every rushes package shares: what a run directory is, not how any one stage works.

- `schema`: every table's columns, the clip id, shared vocabularies (camera motions, colour names);
- `rundir`: the run directory, its table paths, atomic writes, reading tables back;
- `tables`: the rules over those tables ("the kept clips", "the newest caption per clip");
- `config`: config conventions (strict pydantic models loaded from YAML, readable errors);
- `yamlfile`: reading a YAML config file safely (alias bombs, huge or non-UTF-8 files), PyYAML only;
- `stage`: the stage contract (resources, `setup`, batches, permanent vs transient failures);
- `video`: reading frames out of video files and writing h264 files;
- `models`: model conventions shared by every package (device choice, "untrained" markers, "not found").

It lives under `curation/` because the project's top level is fixed, but it is not curation's:
it imports nothing from any rushes package, only the standard library, numpy, pyarrow, pydantic,
PyYAML and (lazily, inside functions) PyAV, OpenCV and torch. Importing this package or
`curation.core.schema` pulls in only pyarrow, so `training/` can read the schema on a torch-only box.
"""
