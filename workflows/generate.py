"""`rushes generate-footage` and the workflow's `generate:` step: procedural reels with their truth."""

from __future__ import annotations

import time
from pathlib import Path

from curation.core.rundir import atomic_write_bytes


def generate_footage(cfg) -> list[Path]:
    """Write `cfg.reels` procedural reels (and their truth as JSON) to `cfg.out_dir`; existing ones are kept.

    Reel i is `reel_<seed+i>.mp4`, rendered from `workflows.synthetic.footage.random_segments` with that seed, so
    the same settings always give the same files and a re-run writes nothing.
    """
    import json
    import os
    import uuid

    from workflows.synthetic import footage

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(cfg.reels):
        seed = cfg.seed + i
        path = out_dir / f"reel_{seed:04d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        segments = footage.random_segments(seed, round(cfg.seconds * cfg.fps), fps=cfg.fps)
        tmp = out_dir / f".{path.stem}.{uuid.uuid4().hex}.mp4"  # hidden: input resolution skips it
        truth = footage.write_footage(tmp, segments, cfg.width, cfg.height, cfg.fps, seed=seed)
        atomic_write_bytes(path.with_suffix(".truth.json"), json.dumps(truth.to_dict(), indent=1).encode())
        os.replace(tmp, path)
    return paths


def run_generate_step(wf, section) -> None:
    """The `generate:` section of a workflow YAML: footage for the steps after it."""
    from rich.console import Console

    started = time.monotonic()
    paths = generate_footage(section)
    Console().print(f"generate: {len(paths)} reels of {section.seconds:g} s in {section.out_dir} "
                               f"({time.monotonic() - started:.1f} s)")
