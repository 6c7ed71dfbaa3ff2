"""Curation end to end, with and without extraction, on the same generated footage, in one run.

    .venv/bin/python benchmarks/bench_curate_kinds.py                     # 1 minute at 640x360 and 1280x720
    .venv/bin/python benchmarks/bench_curate_kinds.py --sizes 640x360 --minutes 2 --repeat 3

Three timings per input, interleaved round by round (the best of --repeat rounds counts, so a burst
of load from other jobs hits all three alike):

- analysis: probe + decode + shots + every score (`curation.process.analyze_source`), nothing written;
- clip-free: the whole curate step of one source with `extract.enabled: false` (`process_source`:
  analysis, thumbnails, the manifest part);
- extracting: the same with the default extraction (h264 clips, longest side 512, crf 20).

Figures are seconds of footage per second of wall time per core: footage seconds / process CPU
seconds (all threads), since a worker that uses 1.3 cores for a second costs 1.3 core-seconds; the
wall-clock realtime factor of one process is printed beside it. The ratio clip-free / extracting is
taken within the same run. Generated files are cached in --workdir. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_analysis import generated, timed  # noqa: E402  (the same reels, the same clock)


def configs(text: bool):
    from curation.config import CurateConfig
    from curation.core.config import validate

    analysis = {} if text else {"analysis": {"text_detector": "none"}}
    return (validate({**analysis, "extract": {"enabled": False}}, CurateConfig),
            validate({**analysis, "extract": {"enabled": True}}, CurateConfig))


def curate_step(path: Path, cfg, work: Path) -> dict:
    from curation.core.rundir import config_hash
    from curation.pipeline import process_source

    out = work / f"out-{uuid_hex()}"
    result = process_source(str(path), out, cfg, config_hash(cfg))
    assert result["status"] == "processed", result
    shutil.rmtree(out)
    return result


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


def measure(path: Path, seconds: float, repeat: int, text: bool, work: Path) -> dict:
    from curation.process import analyze_source

    free_cfg, extract_cfg = configs(text)
    analyze_source(str(path), path, free_cfg)  # start-up (OCR model, colour table) paid once, as a worker does
    best = {name: [float("inf"), float("inf")] for name in ("analysis", "clip-free", "extracting")}
    kept = 0
    for _ in range(repeat):
        for name, fn in (("analysis", lambda: analyze_source(str(path), path, free_cfg)),
                         ("clip-free", lambda: curate_step(path, free_cfg, work)),
                         ("extracting", lambda: curate_step(path, extract_cfg, work))):
            wall, cpu, result = timed(fn)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            if name == "extracting":
                kept = result["kept"]
    return {"seconds": seconds, "kept": kept, **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"], help="generated footage sizes, WxH")
    parser.add_argument("--minutes", type=float, default=1.0, help="length of each generated reel")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best of each timing counts")
    parser.add_argument("--no-text", action="store_true", help="analysis.text_detector: none (no OCR)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rushes-bench-curate")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)  # as a curation worker runs: one CPU per source
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_kinds_") as tmp:
        for size in args.sizes:
            width, height = (int(v) for v in size.lower().split("x"))
            path = generated(args.workdir, args.minutes, width, height)
            print(f"timing {path.name} ({args.repeat} rounds) ...", flush=True)
            rows.append((size, measure(path, args.minutes * 60, args.repeat, not args.no_text, Path(tmp))))

    print()
    print(f"{'input':12s} {'step':11s} {'wall s':>7s} {'cpu s':>7s} {'realtime':>9s} {'per core':>9s}")
    for size, r in rows:
        for name in ("analysis", "clip-free", "extracting"):
            wall, cpu = r[name]
            print(f"{size:12s} {name:11s} {wall:7.2f} {cpu:7.2f} {r['seconds'] / wall:8.1f}x {r['seconds'] / cpu:8.1f}x")
        (fw, fc), (ew, ec) = r["clip-free"], r["extracting"]
        print(f"{size:12s} clip-free / extracting: {fw / ew:.2f} (wall), {fc / ec:.2f} (cpu); "
              f"{r['kept']} kept clips in {r['seconds']:g} s of footage")
    print("\nrealtime: footage seconds per wall second (one process); per core: footage seconds per CPU second")


if __name__ == "__main__":
    main()
