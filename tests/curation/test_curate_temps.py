"""`rushes curate`'s start-up clean-up: a killed run's temporaries go, a live concurrent writer's stay."""

from curation.core.rundir import RunDir, temp_path
from curation.pipeline import remove_temp_files


def _dead_writer_temp(path):
    """A temporary of `path` named for a process of this machine that does not run."""
    name = temp_path(path).name
    host = name.split("@")[1]
    return path.with_name(f".{path.name}.{'0' * 32}-999999999@{host}")


def test_remove_temp_files_keeps_a_live_writers_clip(tmp_path):
    run = RunDir(tmp_path)
    for folder in (run.clips, run.manifest, run.root / "_units" / "src-abc"):
        folder.mkdir(parents=True)
    dead = [_dead_writer_temp(run.clips / "c1.mp4"), _dead_writer_temp(run.manifest / "part-1.parquet"),
            _dead_writer_temp(run.root / "_units" / "src-abc" / "unit-0.parquet")]
    live = [temp_path(run.clips / "c2.mp4"), temp_path(run.root / "_units" / "src-abc" / "unit-1.parquet")]
    for path in dead + live:
        path.write_bytes(b"half written")
    whole = run.clips / "c0.mp4"
    whole.write_bytes(b"a whole clip")

    assert remove_temp_files(run) == 3
    assert not any(p.exists() for p in dead)
    assert all(p.exists() for p in live) and whole.exists()
