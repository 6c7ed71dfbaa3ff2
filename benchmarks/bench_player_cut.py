"""The search page's cut of a range (run by hand): one decode pass against reads in chunks.

    flock /tmp/rushes-cpu.lock .venv/bin/python benchmarks/bench_player_cut.py
    .venv/bin/python benchmarks/bench_player_cut.py --seconds 10 60 --repeat 3

In a clip-free run, `rushes serve` plays a clip by cutting its range out of the source
(`curation.core.clips.cut_range`, into OUT/_cache/player/). A source of 4 minutes (640x360 h264 at
24 fps, a key frame every 2 s) holds ranges of `--seconds` starting at 60 s. Each is read whole by:

- `chunks, pyav`: `clip_frames` 96 frames at a time with PyAV, as `cut_range` read until now: each
  chunk seeks to the key frame before the range and decodes forward to the chunk;
- `chunks, decord`: the same chunks through decord (its worker started before timing);
- `one pass`: `frames.iter_range_frames`, what `cut_range` decodes with now.

and `cut_range` itself is timed (decoding and encoding the mp4). Every figure is the median of
`--repeat` runs; the ratios against `one pass` are the figures to compare across machines. The
frames of every reader are checked identical.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

FPS = 24
SIZE = (640, 360)
CHUNK = 96  # what cut_range read at once before


def write_source(path: Path, seconds: int) -> None:
    from curation.core.video import VideoWriter
    from workflows.synthetic.footage import Segment, render

    with VideoWriter(path, FPS, crf=23, keyframe_seconds=2.0) as writer:
        for i in range(0, seconds, 20):  # shots of 20 s, rendered one at a time to keep memory small
            frames, _ = render([Segment(20 * FPS, ("circle", "square", "triangle")[i // 20 % 3], "red", "right",
                                        "blue", camera="pan_left")], *SIZE, float(FPS), seed=i)
            for frame in frames:
                writer.write(frame)


def chunked(run, row, reader: str) -> list:
    from curation.core.clips import clip_frame_count, clip_frames

    total = clip_frame_count(run, row, reader=reader)
    out = []
    for start in range(0, total, CHUNK):
        out += clip_frames(run, row, list(range(start, min(total, start + CHUNK))), reader=reader)
    return out


def one_pass(row) -> list:
    from curation.core import frames as F
    from curation.core.schema import M

    return list(F.iter_range_frames(row[M.source], row[M.start_time], row[M.end_frame] - row[M.start_frame]))


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, nargs="+", default=[10, 30, 60], help="range lengths")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from curation.core import frames as F
    from curation.core.clips import cut_range
    from curation.core.rundir import RunDir
    from curation.core.schema import M

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "source.mp4"
        print(f"writing a 240 s source ({SIZE[0]}x{SIZE[1]}, {FPS} fps) ...", flush=True)
        write_source(source, 240)
        run = RunDir(tmp / "out")
        F._worker().call(F._decord_clip, (str(source), [0], F.frame_count(source)), 60)  # start decord's worker
        print(f"{'range':>6} {'chunks, pyav':>13} {'chunks, decord':>15} {'one pass':>9} {'cut_range':>10}"
              f" {'pyav / one':>11} {'decord / one':>13}")
        for seconds in args.seconds:
            row = {M.clip_id: f"r{seconds}", M.source: str(source), M.config_hash: "none", M.fps: float(FPS),
                   M.clip_path: None, M.start_frame: 60 * FPS, M.end_frame: (60 + seconds) * FPS,
                   M.start_time: 60.0}
            t_pyav, by_pyav = timed(lambda row=row: chunked(run, row, "pyav"), args.repeat)
            t_decord, by_decord = timed(lambda row=row: chunked(run, row, "decord"), args.repeat)
            t_one, by_one = timed(lambda row=row: one_pass(row), args.repeat)
            assert len(by_one) == len(by_pyav) == len(by_decord) == seconds * FPS
            assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(by_one, by_pyav, by_decord, strict=True))
            t_cut, _ = timed(lambda row=row, dest=tmp / f"cut{seconds}.mp4": cut_range(run, row, dest), args.repeat)
            print(f"{seconds:>5}s {t_pyav:>12.2f}s {t_decord:>14.2f}s {t_one:>8.2f}s {t_cut:>9.2f}s"
                  f" {t_pyav / t_one:>10.1f}x {t_decord / t_one:>12.1f}x", flush=True)


if __name__ == "__main__":
    main()
