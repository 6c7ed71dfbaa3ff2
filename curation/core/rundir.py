"""The run directory: where each table lives, atomic writes, and reading a table back.

A table is a directory of parquet parts. A part is written to a temporary name and renamed into
place, so a killed run never leaves a half-written part that a later run would trust; the temporary
names its writer, so a later run removes a dead writer's leftovers (`remove_stale_temps`) and never a
live one's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import schema


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (`--out`)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.parquet"

    @property
    def quarantine_parts(self) -> Path:
        # workers write one part per failure here; the driver folds them into quarantine.parquet
        return self.root / "_quarantine"

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def decisions(self) -> Path:
        return self.root / "decisions"

    @property
    def clip_files(self) -> Path:
        # clip files written after curation (`rushes extract`)
        return self.root / "clip_files"

    @property
    def captions(self) -> Path:
        return self.root / "captions"

    @property
    def input_captions(self) -> Path:
        # captions given beside sources in list files
        return self.root / "input_captions"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def milvus_db(self) -> Path:
        return self.root / "milvus.db"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def input_cache(self) -> Path:
        # local copies of remote inputs
        return self.root / "_cache" / "inputs"

    # one source's parts, named by its source key and the config hash that made them
    def manifest_part(self, key: str, chash: str) -> Path:
        return self.manifest / f"{key}-{chash}.parquet"

    def quarantine_part(self, key: str, chash: str) -> Path:
        """The whole source failed permanently (its presence marks the source done)."""
        return self.quarantine_parts / f"{key}-{chash}.parquet"

    @property
    def inputs_part(self) -> Path:
        """Inputs the latest run skipped (unreadable) or found to be copies; rewritten by every run."""
        return self.quarantine_parts / "inputs.parquet"

    def clip_quarantine_part(self, key: str, chash: str) -> Path:
        """Clips of a processed source that could not be extracted (does not mark the source done)."""
        return self.quarantine_parts / f"{key}-{chash}.clips.parquet"

    def attempts(self, key: str, chash: str) -> Path:
        """Markers of attempts at a source that are running, or whose worker died."""
        return self.root / "_attempts" / f"{key}-{chash}"

    def rel(self, path: Path | str) -> str:
        """A path inside the run directory, as stored in tables (relative, forward slashes)."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()


# Sources: how a run names them (its parts, its copies of remote inputs). Here, in the kernel, so that
# curation.inputs (which finds and fetches them) and the stages reading clip-free ranges share one rule.
def is_url(text: str) -> bool:
    return "://" in text and not text.startswith("/")


def is_remote(source: str) -> bool:
    return is_url(source) and not source.startswith("file://")


def local_file(source: str) -> Path:
    """The path a local source (a path or a file:// URL) names; for a source that is not remote."""
    return Path(source[len("file://"):] if source.startswith("file://") else source)


def source_key(source: str) -> str:
    """Short stable name of a source, used to name its manifest and quarantine parts."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def cache_path_for(url: str, cache_dir: Path) -> Path:
    """Where a run keeps its copy of the remote input `url` (in `RunDir.input_cache`)."""
    name = Path(url.split("?", 1)[0].rstrip("/")).name or "source"
    return Path(cache_dir) / source_key(url) / name


def now_utc() -> datetime:
    return datetime.now(UTC)


def config_hash(config) -> str:
    """Short stable hash of a pydantic config (or any JSON-able value): same settings, same hash."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# A temporary's name says who writes it: .NAME.<random>-<pid>@<host>.tmp. A later run can then tell the
# leftovers of a killed writer (its process is gone) from the file a live concurrent writer is busy with.
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
_TEMP_NAME = re.compile(r"\.[0-9a-f]{32}-(\d+)@([A-Za-z0-9_-]*)\.tmp$")
STALE_TEMP_SECONDS = 3600  # no part takes this long to write: older temporaries of unknown writers are dead


def temp_path(path: Path) -> Path:
    """The hidden temporary `path` is written to before it is renamed into place."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}-{os.getpid()}@{_HOST}.tmp")


def remove_stale_temps(directory: Path, max_age: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temporaries a killed writer left in `directory`; returns how many.

    A temporary is stale when its writer was a process of this machine that no longer runs, or when it is
    older than `max_age` seconds (a writer on another machine, or a name without a writer). A live
    writer's temporary (another run at work in the same directory) is left alone."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for tmp in directory.glob(".*.tmp"):
        match = _TEMP_NAME.search(tmp.name)
        dead = match is not None and match.group(2) == _HOST and not _process_runs(int(match.group(1)))
        try:
            if dead or time.time() - tmp.stat().st_mtime > max_age:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # renamed into place (or removed) by its writer meanwhile
            pass
    return removed


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write one parquet file so that it either exists whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def rows_to_table(rows: list[dict], table_schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table of exactly `table_schema`; a missing column is null, an unknown one an error."""
    names = set(table_schema.names)
    for row in rows:
        unknown = set(row) - names
        if unknown:
            raise KeyError(f"columns {sorted(unknown)} are not in the schema; add them to curation/core/schema.py")
    columns = {name: [row.get(name) for row in rows] for name in table_schema.names}
    return pa.table(columns, schema=table_schema)


def read_table(directory: Path, table_schema: pa.Schema) -> pa.Table:
    """All parts of a table directory (hidden temp files ignored); an empty table when none exist."""
    directory = Path(directory)
    parts = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(".")) if directory.exists() else []
    if not parts:
        return table_schema.empty_table()
    return pa.concat_tables([_conform(_read_part(p, table_schema), table_schema) for p in parts])


def _read_part(path: Path, table_schema: pa.Schema) -> pa.Table:
    present = set(pq.read_schema(path).names)  # read only the columns asked for (not every vector)
    return pq.read_table(path, columns=[n for n in table_schema.names if n in present])


def _conform(table: pa.Table, table_schema: pa.Schema) -> pa.Table:
    """A part as `table_schema`: its columns in order, and nulls for a column added since it was written."""
    columns = {f.name: table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in table_schema}
    return pa.table(columns).cast(table_schema)


def read_manifest(run: RunDir) -> pa.Table:
    """The manifest exactly as curation wrote it; `tables.read_clips` adds every later decision."""
    return read_table(run.manifest, schema.MANIFEST)


def append_part(directory: Path, rows: list[dict], table_schema: pa.Schema, prefix: str) -> Path | None:
    """Add one new part of `rows` to an append-only table; None (and no file) when there are no rows."""
    if not rows:
        return None
    stamp = now_utc().strftime("%Y%m%dT%H%M%S")
    path = Path(directory) / f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    atomic_write_table(rows_to_table(rows, table_schema), path)
    return path


def read_quarantine(run: RunDir) -> pa.Table:
    if run.quarantine.exists():
        return pq.read_table(run.quarantine).cast(schema.QUARANTINE)
    return schema.QUARANTINE.empty_table()
