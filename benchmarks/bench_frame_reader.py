"""Frame reader benchmark (run by hand): decord against PyAV for sampling a few frames.

    flock /tmp/rushes-cpu.lock .venv/bin/python benchmarks/bench_frame_reader.py
    .venv/bin/python benchmarks/bench_frame_reader.py --clips 20 --counts 8 --keyints rushes x264 24 12

Clips of 5, 20 and 60 s (640x360 h264 at 24 fps, written as extraction writes clips: `VideoWriter`
with the default `extract` settings, a key frame every `keyframe_seconds` and no B-frames) are sampled
for 4, 8 and 16 frames (`spread_indices`, as captioning does) by:

- `pyav`: today's `read_frames`, decoding from the start up to the last frame asked (sequential);
- `decord`: `read_clip_frames(reader="decord")`, the whole guarded path (the file's packets counted
  by PyAV, the read in the worker process, frames back over a pipe); the worker is started once
  before timing, as it lives on in a captioning worker.

Ranges inside a 4-minute source (shots of 20 s) are read by `read_range_frames` with each backend:
PyAV seeks to the key frame before the range and decodes forward; the source's facts and clock are
read once per source (as a worker reading its clips does). `--keyints` adds clips written
with x264's defaults ("x264": a key frame every 250 frames or at a scene cut, B-frames on; what
extraction wrote before `keyframe_seconds`) or with a key frame every N frames (x264 `g`, B-frames
on), which is what decides decord's gain. Each figure is the
median of `--repeat` reads, every cache of the reader cleared before each; the ratio pyav / decord
is the figure to compare across machines. Frames are checked identical in every case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

FPS = 24
SIZE = (640, 360)


def write_clip(path: Path, seconds: float, keyint: str, seed: int = 0) -> None:
    """One shot of moving footage: "rushes" as extraction writes it, "x264" with x264's defaults."""
    import av

    from curation.config import ExtractConfig
    from curation.core.video import VideoWriter
    from workflows.synthetic.footage import Segment, render

    frames, _ = render([Segment(int(seconds * FPS), "circle", "red", "right", "blue", camera="pan_left")],
                       *SIZE, float(FPS), seed)
    if keyint in ("rushes", "x264"):
        extract = ExtractConfig()
        with VideoWriter(path, FPS, crf=extract.crf,
                         keyframe_seconds=extract.keyframe_seconds if keyint == "rushes" else None) as writer:
            for frame in frames:
                writer.write(frame)
        return
    with av.open(str(path), "w") as container:  # x264 as VideoWriter sets it up, plus a key frame every `keyint`
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast", "g": keyint}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_source(path: Path, minutes: float) -> list[tuple[float, int]]:
    """A source of 20 s shots (cuts between them); returns each shot's (start_time, frames)."""
    from curation.core.video import VideoWriter
    from workflows.synthetic.footage import Segment, render

    colours = ["red", "green", "yellow", "white", "orange", "pink"]
    shots = int(minutes * 60 / 20)
    segments = [Segment(20 * FPS, "circle", colours[i % 6], "right" if i % 2 else "left", "blue",
                        camera="pan_left" if i % 3 == 0 else "static") for i in range(shots)]
    frames, _ = render(segments, *SIZE, float(FPS), 1)
    with VideoWriter(path, FPS) as writer:
        for frame in frames:
            writer.write(frame)
    return [(i * 20.0, 20 * FPS) for i in range(shots)]


def clear_caches() -> None:
    from curation.core import frames as F

    F._FACTS.clear()
    F._CLOCKS.clear()
    F._worker().call(F._forget_readers, (), 10.0)  # decord's readers, kept open in the worker


def timed(fn, repeat: int, clear: bool = True):
    times, out = [], None
    for _ in range(repeat):
        if clear:
            clear_caches()
        began = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), out


def same(a: list, b: list) -> bool:
    import numpy as np

    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=float, nargs="+", default=[5, 20, 60], help="clip lengths (s)")
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 8, 16], help="frames sampled")
    parser.add_argument("--keyints", nargs="+", default=["rushes"],
                        help="'rushes' (extraction's settings), 'x264' (x264's defaults) and/or frames between key "
                        "frames, e.g. 24 12")
    parser.add_argument("--source-minutes", type=float, default=4.0, help="0 skips the range benchmark")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from curation.core import frames as F
    from curation.core.video import read_frames, spread_indices

    if not F.decord_installed():
        raise SystemExit("decord is not installed: pip install decord2==3.4.0")
    fallbacks: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_clip(tmp / "warm.mp4", 1, "rushes")
        F.read_clip_frames(tmp / "warm.mp4", [0], reader="decord")  # the worker starts once, as in a run
        print(f"clips: {SIZE[0]}x{SIZE[1]} h264 at {FPS} fps; median of {args.repeat}; seconds per clip read")
        print(f"{'clip':>6} {'keyint':>7} {'KiB':>6} {'frames':>6} {'pyav s':>8} {'decord s':>9} {'ratio':>6}  identical")
        for keyint in args.keyints:
            for seconds in args.clips:
                path = tmp / f"clip_{seconds:g}s_{keyint}.mp4"
                write_clip(path, seconds, keyint)
                n = F.frame_count(path, reader="pyav")
                for count in args.counts:
                    wanted = spread_indices(n, count)
                    t_pyav, by_pyav = timed(lambda p=path, w=wanted: read_frames(p, w, reader="pyav"), args.repeat)
                    t_dec, by_dec = timed(lambda p=path, w=wanted: F.read_clip_frames(
                        p, w, reader="decord", on_fallback=fallbacks.append), args.repeat)
                    print(f"{seconds:>5g}s {keyint:>7} {path.stat().st_size >> 10:>6} {count:>6} {t_pyav:>8.3f} {t_dec:>9.3f} {t_pyav / t_dec:>5.2f}x  "
                          f"{same(by_pyav, by_dec)}", flush=True)
        if args.source_minutes > 0:
            source = tmp / "source.mp4"
            shots = write_source(source, args.source_minutes)
            print(f"\nranges of 20 s inside a {args.source_minutes:g}-minute source ({len(shots)} shots); "
                  "seconds per range read, summed over the shots")
            print(f"{'frames':>6} {'pyav s':>8} {'decord s':>9} {'ratio':>6}  identical")
            for count in args.counts:
                t_pyav = t_dec = 0.0
                identical = True
                clear_caches()  # a source's facts and clock are read once, then serve all its clips
                for start, frames in shots:
                    wanted = spread_indices(frames, count)
                    tp, by_pyav = timed(lambda s=start, f=frames, w=wanted: F.read_range_frames(
                        source, s, f, w, reader="pyav"), args.repeat, clear=False)
                    td, by_dec = timed(lambda s=start, f=frames, w=wanted: F.read_range_frames(
                        source, s, f, w, reader="decord", on_fallback=fallbacks.append), args.repeat, clear=False)
                    t_pyav, t_dec, identical = t_pyav + tp, t_dec + td, identical and same(by_pyav, by_dec)
                print(f"{count:>6} {t_pyav:>8.3f} {t_dec:>9.3f} {t_pyav / t_dec:>5.2f}x  {identical}")
    print(f"\nfallbacks to PyAV: {len(fallbacks)}" + (f" ({fallbacks[0]})" if fallbacks else ""))


if __name__ == "__main__":
    main()
