"""Work units (`curation.units`): a long source split into time ranges gives exactly the clips of a
one-worker run; a killed run redoes only the units not written; a bad unit quarantines the source."""

import json

import pytest
from rich.console import Console

from curation.config import CurateConfig
from curation.core import schema
from curation.core.config import validate
from curation.core.rundir import RunDir, config_hash, read_manifest
from curation.core.stage import PermanentError
from curation.probe import probe
from curation.process import analyze_source
from workflows.synthetic.footage import Segment, write_footage

M = schema.M
FPS = 24


@pytest.fixture(scope="module")
def reel(tmp_path_factory):
    """~28 s at 128x72 with cuts near the 5 s unit boundaries (120, 240, ...), a black run, a fade,
    a dissolve, and a long shot over two boundaries that max_shot_seconds splits."""
    segs = [
        Segment(70, "circle", "red", "right", "blue"),
        Segment(48, "square", "yellow", "left", "green", camera="pan_left"),  # cut at 118: 2 before a boundary
        Segment(30, black=True),
        Segment(66, "triangle", "white", "down", "purple", transition="fade", transition_frames=8),
        Segment(250, "circle", "orange", "up", "gray", camera="zoom_in"),  # 214-464: over 240 and 360
        Segment(50, "square", "blue", "right", "yellow", transition="dissolve", transition_frames=10),
        Segment(60, "triangle", "red", "left", "green", camera="tilt_up"),
        Segment(96, "circle", "purple", "down", "white"),
    ]
    path = tmp_path_factory.mktemp("units") / "long.mp4"
    write_footage(path, segs, 128, 72, FPS, seed=5)
    return path


def _cfg(**units):
    return validate({"analysis": {"text_detector": "none"}, "shots": {"max_shot_seconds": 4},
                     "units": {"seconds": 5, "warmup_seconds": 4, **units}}, CurateConfig)


def _same(a: list[dict], b: list[dict]) -> bool:
    def norm(rows):
        return [json.dumps({k: v for k, v in r.items() if k != M.created_at}, sort_keys=True, default=repr)
                for r in rows]

    return norm(a) == norm(b)


def test_stitched_units_are_the_one_worker_clips(reel):
    from curation.units import analyze_unit, plan_units, stitch, unit_count

    cfg = _cfg()
    whole = analyze_source(str(reel), reel, cfg)
    info = probe(reel)
    n = unit_count(reel, cfg)
    assert n >= 4
    plan = plan_units(reel, info, n)
    assert len(plan.pts) == plan.bounds[-1] == whole[-1][M.end_frame]
    parts = [analyze_unit(str(reel), reel, info, cfg, config_hash(cfg), plan, k) for k in range(n)]
    rows = stitch(parts, plan.bounds)
    assert rows is not None and len(rows) == len(whole) > 8
    assert _same(rows, whole)
    assert "max_duration" in {r[M.shot_detector] for r in rows}  # the long shot, split over two boundaries
    # each unit did its own range (plus a little): no unit decoded the whole source
    assert all(p["events"] for p in parts[1:])


def test_short_sources_and_stride_mode_stay_whole(reel):
    from curation.units import unit_count

    assert unit_count(reel, _cfg(seconds=20)) == 1  # under 2 units long
    assert unit_count(reel, _cfg(enabled=False)) == 1
    cfg = _cfg().model_copy(update={"shots": _cfg().shots.model_copy(update={"mode": "stride"})})
    assert unit_count(reel, cfg) == 1
    assert config_hash(_cfg()) == config_hash(_cfg(seconds=7))  # the split is not part of what is decided


def _curate(out, reel, cfg):
    from workflows.curate import curate

    return curate(out, [str(reel)], cfg, use_ray=False, console=Console(quiet=True))


def _files(run: RunDir) -> tuple[set, set]:
    return {p.name for p in run.clips.iterdir()}, {p.name for p in run.thumbs.iterdir()}


@pytest.fixture(scope="module")
def one_worker(reel, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    _curate(out, reel, _cfg(enabled=False))
    return RunDir(out)


def test_curate_with_units_equals_one_worker(reel, one_worker, tmp_path):
    outcome = _curate(tmp_path, reel, _cfg())
    assert [r["status"] for r in outcome.results] == ["processed"]
    run = RunDir(tmp_path)
    assert _same(read_manifest(run).to_pylist(), read_manifest(one_worker).to_pylist())
    assert _files(run) == _files(one_worker)  # no clip file or thumbnail left over from the overlaps
    assert not (tmp_path / "_units").exists()


def test_a_killed_run_redoes_only_the_units_not_written(reel, one_worker, tmp_path, monkeypatch):
    import curation.units as units
    from curation.pipeline import run_unit

    cfg = _cfg()
    n = units.unit_count(reel, cfg)
    for k in (0, 2):  # what a run killed (kill -9) after these two units left behind
        assert run_unit(str(reel), k, n, tmp_path, cfg, config_hash(cfg))["status"] == "processed"
    done = []
    real = units.process_unit
    monkeypatch.setattr(units, "process_unit", lambda source, k, *a: done.append(k) or real(source, k, *a))
    _curate(tmp_path, reel, cfg)
    assert sorted(done) == [k for k in range(n) if k not in (0, 2)]
    assert _same(read_manifest(RunDir(tmp_path)).to_pylist(), read_manifest(one_worker).to_pylist())


def test_units_that_never_agree_fall_back_to_one_worker(reel, one_worker, tmp_path, monkeypatch):
    import curation.units as units

    monkeypatch.setattr(units, "stitch", lambda parts, bounds: None)
    outcome = _curate(tmp_path, reel, _cfg())
    assert [r["status"] for r in outcome.results] == ["processed"]
    run = RunDir(tmp_path)
    assert _same(read_manifest(run).to_pylist(), read_manifest(one_worker).to_pylist())
    assert _files(run) == _files(one_worker)


def test_a_bad_unit_quarantines_the_source(reel, tmp_path, monkeypatch):
    import curation.units as units

    real = units.process_unit

    def broken(source, k, *a):
        if k == 1:
            raise PermanentError(f"{source}: unit {k} is corrupt")
        return real(source, k, *a)

    monkeypatch.setattr(units, "process_unit", broken)
    outcome = _curate(tmp_path, reel, _cfg())
    assert [(r["status"], "unit 1 is corrupt" in r["error"]) for r in outcome.results] == [("quarantined", True)]
    run = RunDir(tmp_path)
    assert read_manifest(run).num_rows == 0
    assert not list(run.clips.glob("*.mp4")) and not (tmp_path / "_units").exists()


def test_a_unit_that_keeps_killing_its_worker_quarantines_the_source(reel, tmp_path):
    """As a whole source does: each dead attempt leaves its marker; after MAX_ATTEMPTS the source is
    quarantined instead of tried by every run; one death then a good attempt clears the marker."""
    import curation.units as units
    from curation.inputs import source_key
    from curation.pipeline import MAX_ATTEMPTS, run_unit

    cfg = _cfg()
    chash = config_hash(cfg)
    n = units.unit_count(reel, cfg)
    markers = RunDir(tmp_path).attempts(source_key(str(reel)), chash)
    markers.mkdir(parents=True)
    (markers / "unit0-attempt-dead").touch()  # one earlier death of unit 0
    assert run_unit(str(reel), 0, n, tmp_path, cfg, chash)["status"] == "processed"
    assert not list(markers.glob("unit0-attempt-*"))
    for i in range(MAX_ATTEMPTS):
        (markers / f"unit1-attempt-{i}").touch()
    result = run_unit(str(reel), 1, n, tmp_path, cfg, chash)
    assert result["status"] == "quarantined" and "stopped its worker 3 times" in result["error"]
    from curation.core.rundir import read_table

    rows = read_table(RunDir(tmp_path).quarantine_parts, schema.QUARANTINE).to_pylist()
    assert [(r[schema.Q.source], r[schema.Q.stage]) for r in rows] == [(str(reel), "worker")]
