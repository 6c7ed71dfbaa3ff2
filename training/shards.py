"""What a shard directory is: bucket names, the defaults `rushes shard` writes with, and what it records.

The shard writer (workflows/shard.py), the CLI and workflow options, the latent encoder and the trainer
all take these from here. Standard library only: the CLI reads the defaults for its `--help` without
loading torch or pyarrow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# FRAMESxHEIGHTxWIDTH; frames 1 + 4k for the autoencoder, 1-frame buckets take clips too short for video
DEFAULT_BUCKETS = ("17x64x64", "17x64x96", "17x96x64", "1x64x64", "1x64x96", "1x96x64")
DEFAULT_CAPTION_BLEND = 0.95  # p(the trainer uses the dense caption), else the short or original one
INDEX = "index.json"  # SHARDS/index.json: the settings the shards were written with, and clips per bucket

BUCKET_RE = re.compile(r"^f(\d+)_h(\d+)_w(\d+)$")


def bucket_name(frames: int, height: int, width: int) -> str:
    """The bucket's directory name: (17, 64, 96) -> 'f17_h64_w96'."""
    return f"f{frames}_h{height}_w{width}"


def parse_bucket(name: str) -> tuple[int, int, int]:
    """'f17_h64_w96' or '17x64x96' -> (17, 64, 96)."""
    m = BUCKET_RE.match(name) or re.match(r"^(\d+)x(\d+)x(\d+)$", name)
    if not m:
        raise ValueError(f"bucket {name!r} must look like '17x64x96' (frames x height x width)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def recorded_caption_blend(shards: Path) -> float:
    """The caption blend `rushes shard` recorded in SHARDS/index.json (the default where none was)."""
    index = Path(shards) / INDEX
    if not index.exists():
        return DEFAULT_CAPTION_BLEND
    return json.loads(index.read_text())["settings"].get("caption_blend", DEFAULT_CAPTION_BLEND)
