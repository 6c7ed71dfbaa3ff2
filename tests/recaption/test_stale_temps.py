"""`rushes caption` after a killed run: the half-written parts it left are removed, a live writer's are not."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from curation.core.rundir import remove_stale_temps, temp_path
from curation.core.tables import read_captions
from recaption.run import caption_run

ROOT = Path(__file__).resolve().parents[2]

# a writer killed (SIGKILL) half-way through a part, as `kill -9` or the OOM killer leaves it
KILLED_WRITER = """
import os, signal, sys
import pyarrow as pa
import pyarrow.parquet as pq
from curation.core import rundir
def write_then_die(table, where):
    with open(where, "wb") as f:
        f.write(b"PAR1 half a part")
    os.kill(os.getpid(), signal.SIGKILL)
pq.write_table = write_then_die
rundir.atomic_write_table(pa.table({"x": [1]}), rundir.Path(sys.argv[1]) / "part-killed.parquet")
"""


def test_caption_removes_what_a_killed_run_left_and_captions_right(make_run):
    run = make_run(3)
    run.captions.mkdir(parents=True)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run.captions)], cwd=ROOT, timeout=60)
    assert killed.returncode == -9
    [left] = run.captions.glob(".*.tmp")
    assert left.name.startswith(".part-killed.parquet.")
    live = temp_path(run.captions / "part-live.parquet")  # this process: a writer still at work
    live.write_bytes(b"being written")
    old = run.captions / f".part-old.parquet.{uuid.uuid4().hex}.tmp"  # an earlier version's name, hours old
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = run.captions / f".part-new.parquet.{uuid.uuid4().hex}.tmp"  # no writer named, but just begun
    fresh.write_bytes(b"x")

    summary = caption_run(run.root)
    assert not left.exists() and not old.exists()
    assert live.exists() and fresh.exists()
    assert (summary.captioned, summary.failed) == (3, 0) and read_captions(run).num_rows == 3


def test_remove_stale_temps_takes_only_temporaries(tmp_path):
    part = tmp_path / "part-1.parquet"
    part.write_bytes(b"a whole part")
    dead = tmp_path / f".part-2.parquet.{uuid.uuid4().hex}-999999999@{temp_path(part).name.split('@')[1][:-4]}.tmp"
    dead.write_bytes(b"x")  # a pid no process has
    assert remove_stale_temps(tmp_path) == 1 and part.exists() and not dead.exists()
    assert remove_stale_temps(tmp_path / "missing") == 0
