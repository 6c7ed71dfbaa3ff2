"""`rushes curate` end to end: the CLI on generated footage, real opencv-doc clips and broken files;
counts that reconcile; a re-run that does nothing; a `kill -9` mid-run that resumes with nothing lost."""

import os
import re
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.config import CurateConfig
from curation.core import schema
from curation.core.rundir import RunDir, read_manifest, read_quarantine
from curation.core.video import count_frames
from curation.inputs import resolve_inputs
from curation.pipeline import DONE_EARLIER, FAILED, QUARANTINED, process_source
from workflows.cli import app
from workflows.report import funnel

M, Q = schema.M, schema.Q


def _funnel_numbers(output: str) -> dict[str, int]:
    return {m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"^\s+([a-z_ ]+?)\s+(\d+)$", output, re.M)}


@pytest.mark.slow
def test_curate_end_to_end_through_the_cli(baseline, footage_dir, real_clips):
    out, result = baseline
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    sources = resolve_inputs([str(footage_dir), str(real_clips)])
    manifest = read_manifest(run).to_pylist()
    quarantine = read_quarantine(run).to_pylist()

    # every broken file is quarantined with a reason; every other input has a manifest part
    whole = {r[Q.source]: r for r in quarantine if r[Q.clip_id] is None}
    assert set(whole) == {str(footage_dir / "broken" / n) for n in ("empty.mp4", "notes.mp4", "truncated.mp4")} - (
        {r[M.source] for r in manifest})  # a truncated file may be salvaged instead
    assert all(r[Q.error] and r[Q.stage] for r in quarantine)
    assert "empty" in whole[str(footage_dir / "broken" / "empty.mp4")][Q.error]
    assert len(list((out / "manifest").glob("*.parquet"))) + len(whole) == len(sources)
    # the broken opencv clip never crashes the run: salvaged (rows) or quarantined
    bugy = str(real_clips / "Megamind_bugy.avi")
    assert bugy in whole or any(r[M.source] == bugy for r in manifest)

    # counts reconcile, on screen and in the tables
    f = funnel(run)
    shown = _funnel_numbers(result.output)
    assert shown["inputs"] == f.inputs == len(sources) == f.processed + f.quarantined
    assert shown["clips detected"] == len(manifest) == f.kept + f.filtered
    assert shown["kept"] == sum(r[M.status] == schema.STATUS_KEPT for r in manifest) > 0
    assert shown["filtered"] == f.filtered
    for reason, n in f.reasons.items():
        assert shown[reason] == n == sum(reason in r[M.filter_reasons] for r in manifest)

    # kept clips exist, frame-exact; every clip has a thumbnail; filtered clips have no clip file
    ids = [r[M.clip_id] for r in manifest]
    assert len(ids) == len(set(ids))
    for row in manifest:
        assert (out / row[M.thumb_path]).exists()
        if row[M.status] == schema.STATUS_KEPT:
            assert count_frames(out / row[M.clip_path]) == row[M.end_frame] - row[M.start_frame]
        else:
            assert row[M.clip_path] is None and row[M.filter_reasons]
    kept_ids = {r[M.clip_id] for r in manifest if r[M.status] == schema.STATUS_KEPT}
    assert {p.stem for p in (out / "clips").iterdir()} == kept_ids
    assert not list(out.rglob(".*.tmp"))

    # the report shows the same counts
    page = (out / "report.html").read_text()
    assert f"<td class=n>{f.kept}</td>" in page and "data:image/png;base64," in page
    assert "data:image/jpeg;base64," in page and "Quarantine" in page


@pytest.mark.slow
def test_rerunning_a_finished_run_does_no_work(baseline, footage_dir, real_clips, test_config):
    out, _ = baseline
    parts = {p: p.stat().st_mtime_ns for p in (out / "manifest").glob("*.parquet")}
    clips = {p: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    report_mtime = (out / "report.html").stat().st_mtime_ns
    # OUT itself as an input too: its own clips are left out, not curated again
    args = ["curate", str(footage_dir), str(real_clips / "Megamind_bugy.avi"), str(real_clips / "tree.avi"),
            str(out), "--out", str(out), "--config", str(test_config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"left out {len(clips)} inputs that are this run's own clips" in result.output
    assert "nothing to do" in result.output
    assert {p: p.stat().st_mtime_ns for p in (out / "manifest").glob("*.parquet")} == parts
    assert {p: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == clips
    assert (out / "report.html").stat().st_mtime_ns == report_mtime
    assert _funnel_numbers(result.output)["inputs"] == funnel(RunDir(out)).inputs


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_loses_nothing(baseline, ray_cluster, footage_dir, test_config, tmp_path,
                                                  manifest_rows):
    base_out, base_result = baseline
    assert base_result.exit_code == 0, base_result.output
    out = tmp_path / "out"
    inputs = [str(footage_dir / "reels"), str(footage_dir / "broken")]
    sources = resolve_inputs(inputs)
    cmd = [sys.executable, "-m", "workflows.cli", "curate", *inputs, "--out", str(out), "--config", str(test_config),
           "--ray-address", ray_cluster.address, "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "manifest").glob("*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done_at_kill = len(list((out / "manifest").glob("*.parquet"))) + len(list((out / "_quarantine").glob("*")))
    assert 1 <= done_at_kill < len(sources), "the kill must land mid-run for this test to mean anything"

    result = CliRunner().invoke(app, ["curate", *inputs, "--out", str(out), "--config", str(test_config)])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    # the same clips, each once, as the uninterrupted run; and the same quarantined inputs
    assert manifest_rows(out) == manifest_rows(base_out, set(sources))
    assert {p.name for p in (out / "clips").iterdir()} == {
        f"{cid}.mp4" for cid, r in manifest_rows(out).items() if r[M.status] == schema.STATUS_KEPT}
    quarantined = {r[Q.source] for r in read_quarantine(RunDir(out)).to_pylist()}
    assert quarantined == {r[Q.source] for r in read_quarantine(RunDir(base_out)).to_pylist()} & set(sources)
    f = funnel(RunDir(out))
    assert f.inputs == len(sources) and f.detected == f.kept + f.filtered


def test_process_source_failures_permanent_and_transient(footage_dir, tmp_path, monkeypatch):
    cfg = CurateConfig()
    broken = str(footage_dir / "broken" / "notes.mp4")
    result = process_source(broken, tmp_path, cfg, "h1")
    assert result["status"] == QUARANTINED and result["error"].startswith("probe:")
    table = pq.read_table(next((tmp_path / "_quarantine").glob("*-h1.parquet"))).to_pylist()
    assert [(r[Q.source], r[Q.stage], r[Q.clip_id]) for r in table] == [(broken, "probe", None)]
    assert process_source(broken, tmp_path, cfg, "h1")["status"] == DONE_EARLIER

    # a transient error (here: the disk fills up) writes nothing, so the next run retries the source
    import curation.process

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(curation.process, "analyze_source", disk_full)
    reel = str(footage_dir / "reels" / "reel_0008.mp4")
    result = process_source(reel, tmp_path, cfg, "h1")
    assert result["status"] == FAILED and "No space left" in result["error"]
    assert not (tmp_path / "manifest").exists()
    assert len(list((tmp_path / "_quarantine").iterdir())) == 1


def test_a_source_that_keeps_killing_its_worker_is_quarantined(footage_dir, tmp_path):
    from curation.inputs import source_key
    from curation.pipeline import MAX_ATTEMPTS

    reel = str(footage_dir / "reels" / "reel_0009.mp4")
    # what MAX_ATTEMPTS dead workers leave behind: their attempt markers
    markers = RunDir(tmp_path).attempts(source_key(reel), "h2")
    markers.mkdir(parents=True)
    for i in range(MAX_ATTEMPTS):
        (markers / f"attempt-{i}").touch()
    result = process_source(reel, tmp_path, CurateConfig(), "h2")
    assert result["status"] == QUARANTINED and "stopped its worker 3 times" in result["error"]
    rows = pq.read_table(next((tmp_path / "_quarantine").glob("*-h2.parquet"))).to_pylist()
    assert [(r[Q.source], r[Q.stage]) for r in rows] == [(reel, "worker")]
    assert not markers.exists()


def test_the_watchdog_ends_a_hung_worker_and_leaves_its_marker(footage_dir, tmp_path):
    code = f"""
import time, curation.process
from curation.config import CurateConfig
from curation.pipeline import process_source
curation.process.analyze_source = lambda *a: time.sleep(3600)  # a decoder call that never returns
process_source({str(footage_dir / "reels" / "reel_0009.mp4")!r}, {str(tmp_path)!r}, CurateConfig(), "h3", 1.0)
"""
    # only the 1 s watchdog can end the sleep; the subprocess timeout guards a hang
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and "Timeout" in proc.stderr
    assert len(list((tmp_path / "_attempts").glob("*/attempt-*"))) == 1
    assert not (tmp_path / "manifest").exists() and not (tmp_path / "_quarantine").exists()


def test_an_http_source_is_fetched_then_curated_under_its_url(footage_dir, tmp_path):
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(footage_dir / "reels")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/reel_0010.mp4"
        result = process_source(url, tmp_path, CurateConfig(), "h4")
    finally:
        server.shutdown()
        server.server_close()
    assert result["status"] == "processed" and result["detected"] >= 1, result
    rows = read_manifest(RunDir(tmp_path)).to_pylist()
    assert {r[M.source] for r in rows} == {url}
    assert all((tmp_path / r[M.thumb_path]).exists() for r in rows)
    assert [p.name for p in (tmp_path / "_cache" / "inputs").rglob("*.mp4")] == ["reel_0010.mp4"]


def test_workers_let_go_of_the_users_terminal():
    # A Ray worker that inherits the terminal as stdin hangs (SIGTTOU) as soon as PySceneDetect runs
    # `ffmpeg -v quiet`; _detach_stdin gives the worker /dev/null instead.
    import pty

    leader, follower = pty.openpty()
    code = "import os; from workflows.executor import _detach_stdin; a = os.isatty(0); _detach_stdin(); print(a, os.isatty(0))"
    try:
        proc = subprocess.run([sys.executable, "-c", code], stdin=follower, capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.stdout.split() == ["True", "False"], proc.stderr


def test_unreadable_inputs_and_copies_never_stop_a_run(footage_dir, tmp_path, monkeypatch):
    import functools
    import shutil

    import workflows.curate

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(footage_dir / "reels" / "reel_0008.mp4", folder / "a.mp4")
    shutil.copy(footage_dir / "reels" / "reel_0008.mp4", folder / "b_copy.mp4")  # the same bytes, another name
    (folder / "self.mp4").symlink_to("self.mp4")
    (folder / "gone.mp4").symlink_to("nowhere.mp4")
    (folder / "here").symlink_to(".")
    config = tmp_path / "curate.yaml"
    config.write_text("analysis:\n  text_detector: none\nextract:\n  max_side: 96\n  thumb_side: 96\n")
    monkeypatch.setattr(workflows.curate, "curate", functools.partial(workflows.curate.curate, use_ray=False))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["curate", str(folder), "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output

    run = RunDir(out)
    manifest = read_manifest(run).to_pylist()
    assert {r[M.source] for r in manifest} == {str(folder / "a.mp4")}
    ids = [r[M.clip_id] for r in manifest]
    assert ids and len(ids) == len(set(ids))
    rows = {r[Q.source]: r for r in read_quarantine(run).to_pylist()}
    assert rows[str(folder / "b_copy.mp4")][Q.stage] == schema.STAGE_DUPLICATE
    assert str(folder / "a.mp4") in rows[str(folder / "b_copy.mp4")][Q.error]
    for name, words in (("self.mp4", "symlink loop"), ("gone.mp4", "dangling"), ("here", "loop")):
        assert rows[str(folder / name)][Q.stage] == "input" and words in rows[str(folder / name)][Q.error]
    f = funnel(run)
    shown = _funnel_numbers(result.output)
    assert shown["inputs"] == f.inputs == 5 == f.processed + f.quarantined + f.duplicates
    assert shown["duplicate inputs"] == f.duplicates == 1 and shown["quarantined"] == 3
    page = (out / "report.html").read_text()
    assert "Duplicate inputs (1)" in page and "symlink loop" in page

    # the link fixed, the next run curates it and forgets the skip; the copy stays a copy
    (folder / "self.mp4").unlink()
    result = CliRunner().invoke(app, ["curate", str(folder), "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    rows = {r[Q.source] for r in read_quarantine(run).to_pylist()}
    assert str(folder / "self.mp4") not in rows and str(folder / "b_copy.mp4") in rows
    assert funnel(run).inputs == 4

    # another config, the copy named first: it is curated now, and the parts the other got under the
    # old config go, so no clip is listed twice
    config.write_text(config.read_text().replace("thumb_side: 96", "thumb_side: 64"))
    inputs = [str(folder / "b_copy.mp4"), str(folder / "a.mp4")]
    result = CliRunner().invoke(app, ["curate", *inputs, "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(run).to_pylist()
    assert {r[M.source] for r in manifest} == {str(folder / "b_copy.mp4")}
    assert len({r[M.clip_id] for r in manifest}) == len(manifest) == len(ids)
    assert funnel(run).inputs == 2 and funnel(run).duplicates == 1


def test_a_copy_of_a_source_already_in_the_run_is_a_duplicate(footage_dir, tmp_path, monkeypatch):
    """`b_copy.mp4` curated into an OUT that already holds `a.mp4` (the same bytes): a duplicate row,
    no second set of clip ids; with `a.mp4` gone, the fingerprint alone decides, and the row says so."""
    import functools
    import shutil

    import workflows.curate

    shutil.copy(footage_dir / "reels" / "reel_0008.mp4", tmp_path / "a.mp4")
    shutil.copy(footage_dir / "reels" / "reel_0008.mp4", tmp_path / "b_copy.mp4")
    config = tmp_path / "curate.yaml"
    config.write_text("analysis:\n  text_detector: none\nextract:\n  max_side: 96\n  thumb_side: 96\n")
    monkeypatch.setattr(workflows.curate, "curate", functools.partial(workflows.curate.curate, use_ray=False))
    out = tmp_path / "out"
    run = RunDir(out)

    def curate(name):
        result = CliRunner().invoke(app, ["curate", str(tmp_path / name), "--out", str(out), "--config", str(config)])
        assert result.exit_code == 0, result.output
        return {r[Q.source]: r for r in read_quarantine(run).to_pylist()}

    curate("a.mp4")
    ids = [r[M.clip_id] for r in read_manifest(run).to_pylist()]
    assert ids
    rows = curate("b_copy.mp4")
    manifest = read_manifest(run).to_pylist()
    assert {r[M.source] for r in manifest} == {str(tmp_path / "a.mp4")}
    assert len({r[M.clip_id] for r in manifest}) == len(manifest) == len(ids)
    row = rows[str(tmp_path / "b_copy.mp4")]
    assert row[Q.stage] == schema.STAGE_DUPLICATE and "byte-identical to " + str(tmp_path / "a.mp4") in row[Q.error]
    assert funnel(run).duplicates == 1

    (tmp_path / "a.mp4").unlink()  # the first can no longer be read: its fingerprint decides
    row = curate("b_copy.mp4")[str(tmp_path / "b_copy.mp4")]
    assert row[Q.stage] == schema.STAGE_DUPLICATE and "fingerprint only" in row[Q.error]
    assert len(read_manifest(run).to_pylist()) == len(ids)


def test_unreadable_or_changing_inputs_are_transient(footage_dir, tmp_path, monkeypatch):
    import shutil

    import curation.process

    cfg = CurateConfig()
    source = tmp_path / "clip.mp4"
    shutil.copy(footage_dir / "reels" / "reel_0008.mp4", source)
    # no read permission (played: the tests run as root): retried next run, with advice about permissions
    real_access = os.access
    with monkeypatch.context() as m:
        m.setattr(os, "access", lambda p, mode: str(p) != str(source) and real_access(p, mode))
        result = process_source(str(source), tmp_path / "out1", cfg, "h5")
    assert result["status"] == FAILED and "no read permission" in result["error"] and "chmod" in result["error"]
    assert "re-export" not in result["error"]
    assert not (tmp_path / "out1" / "_quarantine").exists() and not (tmp_path / "out1" / "manifest").exists()

    # a file still being written while it is curated: nothing recorded, the next run curates it
    analyze = curation.process.analyze_source

    def growing(*args):
        rows = analyze(*args)
        with open(source, "ab") as f:
            f.write(b"\0" * 1024)
        return rows

    with monkeypatch.context() as m:
        m.setattr(curation.process, "analyze_source", growing)
        result = process_source(str(source), tmp_path / "out2", cfg, "h5")
    assert result["status"] == FAILED and "still being written" in result["error"]
    assert not (tmp_path / "out2" / "manifest").exists()

    def files(out):
        return sorted(p.name for d in ("clips", "thumbs") if (out / d).exists() for p in (out / d).iterdir())

    assert files(tmp_path / "out2") == []  # found before extraction: no clip or thumbnail written
    assert process_source(str(source), tmp_path / "out2", cfg, "h5")["status"] == "processed"
    assert files(tmp_path / "out2")

    # changed while its clips are extracted: what extraction wrote is removed with it
    import curation.extract

    extract = curation.extract.extract_source

    def growing_while_extracting(*args, **kwargs):
        out = extract(*args, **kwargs)
        with open(source, "ab") as f:
            f.write(b"\0" * 1024)
        return out

    with monkeypatch.context() as m:
        m.setattr(curation.extract, "extract_source", growing_while_extracting)
        result = process_source(str(source), tmp_path / "out3", cfg, "h5")
    assert result["status"] == FAILED and "still being written" in result["error"]
    assert not (tmp_path / "out3" / "manifest").exists() and files(tmp_path / "out3") == []
