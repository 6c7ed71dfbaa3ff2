"""Extraction benchmark (run by hand): clips/s and realtime factor, against a plain decode of the same file.

    .venv/bin/python benchmarks/bench_extract.py                 # 1 and 5 minutes of generated footage + vtest.avi
    .venv/bin/python benchmarks/bench_extract.py --minutes 1 5 20 --size 640x360

For each input, every shot becomes a kept clip (the worst case: everything is written), extracted with
the default ExtractConfig (h264, longest side 512, source rate). Both timings come from the same run
on the same machine, so the ratio (extract / decode) is the figure to compare across machines; the
absolute times move with the machine's load. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

OPENCV_VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def plain_decode(path: Path) -> int:
    from curation.decode import decode_frames
    from curation.probe import Deadline
    from curation.signals import AnalysisStats

    return sum(1 for _ in decode_frames(path, Deadline(None, path), AnalysisStats()))


def clip_rows(path: Path, spans: list[tuple[int, int]], fps: float) -> list[dict]:
    from curation.core import schema

    M = schema.M
    return [{M.clip_id: f"bench{i:05d}", M.source: str(path), M.start_frame: s, M.end_frame: e, M.fps: fps,
             M.status: schema.STATUS_KEPT, M.filter_reasons: []} for i, (s, e) in enumerate(spans)]


def even_spans(num_frames: int, length: int) -> list[tuple[int, int]]:
    return [(s, min(s + length, num_frames)) for s in range(0, num_frames, length) if min(s + length, num_frames) > s]


def measure(name: str, path: Path, spans: list[tuple[int, int]], fps: float, work: Path) -> dict:
    from curation.config import ExtractConfig
    from curation.core.rundir import RunDir
    from curation.extract import extract_source

    t0 = time.perf_counter()
    frames = plain_decode(path)
    decode_s = time.perf_counter() - t0
    out = work / f"out-{name}"
    t0 = time.perf_counter()
    rows, failures = extract_source(path, clip_rows(path, spans, fps), RunDir(out), ExtractConfig())
    extract_s = time.perf_counter() - t0
    assert not failures, failures
    shutil.rmtree(out)
    seconds = frames / fps
    return {"input": name, "seconds": seconds, "frames": frames, "clips": len(rows), "decode_s": decode_s,
            "extract_s": extract_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5], help="lengths of generated footage")
    parser.add_argument("--size", default="640x360", help="generated footage size, WxH (even)")
    parser.add_argument("--no-real", action="store_true", help="skip opencv-doc's vtest.avi")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import cv2

    from workflows.synthetic import footage

    cv2.setNumThreads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        work = Path(tmp)
        for minutes in args.minutes:
            fps = 24.0
            segments = footage.random_segments(0, round(minutes * 60 * fps), fps=fps)
            path = work / f"generated_{minutes:g}min.mp4"
            print(f"generating {minutes:g} min of {width}x{height} footage ...", flush=True)
            truth = footage.write_footage(path, segments, width, height, fps)
            spans = [(s.start, s.end) for s in truth.segments]
            results.append(measure(f"generated {minutes:g} min {width}x{height}", path, spans, fps, work))
        if not args.no_real and OPENCV_VTEST.exists():
            # vtest.avi: 768x576, 10 fps, one long shot: cut into 5-second clips
            results.append(measure("opencv vtest.avi 768x576", OPENCV_VTEST, even_spans(795, 50), 10.0, work))

    print()
    print(f"{'input':34s} {'footage':>8s} {'clips':>6s} {'decode':>8s} {'extract':>8s} {'extract/':>9s} "
          f"{'clips/s':>8s} {'realtime':>9s}")
    print(f"{'':34s} {'s':>8s} {'':>6s} {'s':>8s} {'s':>8s} {'decode':>9s} {'':>8s} {'factor':>9s}")
    for r in results:
        print(f"{r['input']:34s} {r['seconds']:8.1f} {r['clips']:6d} {r['decode_s']:8.2f} {r['extract_s']:8.2f} "
              f"{r['extract_s'] / r['decode_s']:8.2f}x {r['clips'] / r['extract_s']:8.2f} "
              f"{r['seconds'] / r['extract_s']:8.1f}x")
    print("\nrealtime factor: seconds of footage extracted per second of wall time (one process, one core for x264)")


if __name__ == "__main__":
    main()
