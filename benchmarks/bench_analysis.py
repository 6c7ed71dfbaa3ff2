"""Analysis pass (probe + shots + every score) against a plain decode of the same files, in one run.

    .venv/bin/python benchmarks/bench_analysis.py                       # quick: 1 minute of footage + opencv-doc
    .venv/bin/python benchmarks/bench_analysis.py --minutes 1 5 20      # how it grows with length
    .venv/bin/python benchmarks/bench_analysis.py --text-quality        # tesseract against the text truth

"plain decode" is PyAV decoding every frame of the same file and doing nothing with it: the floor
any analysis has to pay. It is timed twice per round, with FFmpeg's automatic threading (what the
analysis decoder uses) and single-threaded, and the faster of the two counts, separately for wall
clock and CPU time, so the baseline is the cheapest plain decode this machine managed. Rounds
interleave plain decode, analysis and analysis without text, and the best of --repeat rounds
counts for each, so a burst of load from other jobs hits both sides alike. Ratios are analysis /
plain decode in wall-clock time and in process CPU time (all threads: what a machine full of
workers pays). "ms/frame" is the analysis' extra CPU per frame. "no-text" is the analysis with
`analysis.text_detector: none`, to show what OCR costs. Per-process start-up (the OCR model, the
colour table) is paid once before timing, as a worker does. Generated files are cached in --workdir.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def plain_decode(path: Path, thread_type: str) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        return sum(1 for _ in container.decode(stream))


def generated(workdir: Path, minutes: float, width: int, height: int, fps: float = 24.0) -> Path:
    from workflows.synthetic.footage import random_segments, write_footage

    path = workdir / f"reel_{minutes:g}min_{width}x{height}.mp4"
    if not path.exists():
        t = time.perf_counter()
        segments = random_segments(int(minutes * 1000), int(minutes * 60 * fps), fps=fps)
        write_footage(path.with_suffix(".tmp.mp4"), segments, width, height, fps, seed=int(minutes * 1000))
        path.with_suffix(".tmp.mp4").rename(path)
        print(f"  generated {path.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def timed(fn) -> tuple[float, float, object]:
    """Wall-clock and process CPU seconds (all threads) of one call, and its result."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(files: list[Path], repeat: int) -> None:
    from curation.config import CurateConfig
    from curation.process import analyze_source
    from curation.scores import warm_up

    cfg = CurateConfig()
    no_text = CurateConfig()
    no_text.analysis.text_detector = "none"
    warm_up(cfg.analysis)  # once per process, as a worker does: outside the timing
    print(
        f"ratio = analysis / plain decode (the faster of threaded and single-threaded); best of {repeat} rounds"
    )
    print(
        f"{'file':30s} {'frames':>7s} {'plain s':>8s} {'analysis s':>10s} {'ratio':>6s} {'CPU ratio':>9s} "
        f"{'no-text CPU':>11s} {'ms/frame':>8s} {'clips':>6s} {'max RSS MB':>10s}"
    )
    for path in files:
        plain_decode(path, "AUTO")  # file in the page cache for both sides
        runs = {
            "plain_auto": lambda p=path: plain_decode(p, "AUTO"),
            "plain_single": lambda p=path: plain_decode(p, "NONE"),
            "full": lambda p=path: analyze_source(str(p), p, cfg),
            "bare": lambda p=path: analyze_source(str(p), p, no_text),
        }
        wall = dict.fromkeys(runs, float("inf"))
        cpu = dict.fromkeys(runs, float("inf"))
        results = {}
        for _ in range(repeat):
            for name, fn in runs.items():
                w, c, results[name] = timed(fn)
                wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
        plain_wall = min(wall["plain_auto"], wall["plain_single"])
        plain_cpu = min(cpu["plain_auto"], cpu["plain_single"])
        frames, rows = results["plain_auto"], results["full"]
        extra_ms = (cpu["full"] - plain_cpu) / max(frames, 1) * 1000
        print(
            f"{path.name[:30]:30s} {frames:7d} {plain_wall:8.2f} {wall['full']:10.2f} "
            f"{wall['full'] / plain_wall:6.2f} {cpu['full'] / plain_cpu:9.2f} {cpu['bare'] / plain_cpu:11.2f} "
            f"{extra_ms:8.3f} {len(rows):6d} {max_rss_mb():10.0f}",
            flush=True,
        )


def text_quality(clips: int = 60) -> None:
    """Pixel precision and recall of tesseract's word boxes against the generator's text boxes,
    with and without the prefilter, on frames with and without text."""
    import cv2
    import numpy as np

    from curation.config import AnalysisConfig
    from curation.scores import get_text_detector
    from workflows.synthetic.footage import CAMERA_MOVES, COLORS, DIRECTIONS, SHAPES, Segment, make_footage

    rng = np.random.default_rng(7)
    words = ["SALE", "BREAKING NEWS", "Hello world", "Episode 12", "LIVE", "www.example.com", "Chapter One"]
    names = [c for c in COLORS if c != "black"]
    cases = []
    for i in range(clips):
        bg, col = (str(c) for c in rng.choice(names, 2, replace=False))
        text = str(rng.choice(words)) if i % 2 == 0 else None
        camera = str(rng.choice(CAMERA_MOVES))
        seg = Segment(
            3, str(rng.choice(SHAPES)), col, str(rng.choice(DIRECTIONS[:4])), bg, camera=camera, text=text
        )
        frames, truth = make_footage([seg], 256, 192, seed=i)
        cases.append((cv2.cvtColor(frames[1], cv2.COLOR_RGB2BGR), truth.segments[0].text_box))
    print(f"text detection on {clips} generated 256x192 frames, half with a caption:")
    for prefilter in (False, True):
        detector = get_text_detector(AnalysisConfig(text_prefilter=prefilter))
        hit = detected = truth_px = false_frames = missed_frames = 0
        t = time.perf_counter()
        for bgr, box in cases:
            found = np.zeros(bgr.shape[:2], bool)
            for x, y, w, h, _t, _c in detector.word_boxes(bgr):
                found[y : y + h, x : x + w] = True
            real = np.zeros(bgr.shape[:2], bool)
            if box:
                x, y, w, h = box
                real[y : y + h, x : x + w] = True
                missed_frames += not (found & real).any()
            else:
                false_frames += bool(found.any())
            hit += int((found & real).sum())
            detected += int(found.sum())
            truth_px += int(real.sum())
        ms = (time.perf_counter() - t) / len(cases) * 1000
        print(
            f"  {detector.name}: pixel precision {hit / max(detected, 1):.2f}, pixel recall "
            f"{hit / max(truth_px, 1):.2f}, captions missed {missed_frames}/{clips // 2}, "
            f"text found on caption-free frames {false_frames}/{clips - clips // 2}, {ms:.1f} ms/frame"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="*", default=[1.0], help="lengths of generated footage")
    ap.add_argument("--size", default="640x360", help="generated frame size WxH")
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rushes-bench"))
    ap.add_argument("--no-opencv", action="store_true", help="skip the opencv-doc clips")
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best counts")
    ap.add_argument("--text-quality", action="store_true", help="measure the text detector instead")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.text_quality:
        text_quality()
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    files = [generated(args.workdir, m, width, height, args.fps) for m in args.minutes]
    if not args.no_opencv:
        files += sorted(OPENCV_DATA.glob("*.avi"))
    bench(files, args.repeat)


if __name__ == "__main__":
    main()
