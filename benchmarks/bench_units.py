"""Work units: one long source curated by 1, 2 and 4 workers, in one run, with the clips compared.

    .venv/bin/python benchmarks/bench_units.py                       # a 4-minute 640x360 reel
    .venv/bin/python benchmarks/bench_units.py --minutes 2 --workers 1 2

`rushes curate` (Ray, default settings, extraction on) of one generated source into a fresh OUT:
first with `units.enabled: false` on one worker (one source is one task: the time before work units),
then with work units (60 s ranges, `curation.units`) on each --workers count. Ray (with as many CPUs as
workers) is started before each timing, so the times are curation's, not Ray's start. Ratios are against the first run, taken in this run. The manifests (created_at aside) and
the clip and thumbnail files are compared with the first run's. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def curate_once(source: Path, out: Path, units: bool, workers: int) -> tuple[float, list, set]:
    from rich.console import Console

    from curation.config import CurateConfig
    from curation.core.config import validate
    from curation.core.rundir import RunDir, read_manifest
    from workflows.curate import curate
    from workflows.raysession import ray_session

    cfg = validate({"units": {"enabled": units}}, CurateConfig)
    with ray_session(None, workers):  # started here, outside the timing: curate reuses it
        started = time.perf_counter()
        curate(out, [str(source)], cfg, workers=workers, console=Console(quiet=True))
        seconds = time.perf_counter() - started
    run = RunDir(out)
    rows = [json.dumps({k: v for k, v in r.items() if k != "created_at"}, sort_keys=True, default=repr)
            for r in read_manifest(run).to_pylist()]
    files = {p.name for p in run.clips.iterdir()} | {p.name for p in run.thumbs.iterdir()}
    return seconds, rows, files


def main() -> None:
    from bench_curate_kinds import generated

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rushes-bench")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = generated(args.workdir, args.minutes, width, height)
    print(f"{source.name}: {os.cpu_count()} CPUs here", flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        base, rows, files = curate_once(source, Path(tmp) / "whole", False, 1)
        print(f"  one task (units off), 1 worker : {base:6.1f} s  ratio 1.00  {len(rows)} clips", flush=True)
        for n in args.workers:
            seconds, got, got_files = curate_once(source, Path(tmp) / f"units{n}", True, n)
            same = "identical" if (got, got_files) == (rows, files) else "DIFFERENT"
            print(f"  work units, {n} worker{'s' if n > 1 else ' '}        : {seconds:6.1f} s  ratio "
                  f"{seconds / base:.2f}  clips and files {same}", flush=True)


if __name__ == "__main__":
    main()
