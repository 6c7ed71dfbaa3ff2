"""Training's part of the run report: the sample videos the `train` step made, playing inline.

`training_section(tables)` takes the report's `RunTables` (workflows/report.py) and returns the
context of templates/report_section.html.j2, or None when the run has no samples. It reads what
workflows/train_steps.py wrote: OUT/samples/samples.json (prompts and files), each sample's animated
GIF and frame PNGs (inlined, so the report stays one file), and the DiT run's metrics.jsonl and
loss curve. Only the standard library: training/ imports torch, numpy and pyarrow alone.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def training_facts(dit_run: Path) -> dict | None:
    """Steps, last loss and the loss curve of a DiT run directory, or None without metrics."""
    metrics = dit_run / "metrics.jsonl"
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    curve = dit_run / "loss_curve.png"
    return {"steps": rows[-1]["step"], "loss": rows[-1]["loss"],
            "curve": _data_uri(curve.read_bytes(), "png") if curve.exists() else None}


def training_section(tables) -> dict | None:
    root = Path(tables.run.root)
    listing = root / "samples" / "samples.json"
    if not listing.exists():
        return None
    info = json.loads(listing.read_text())
    samples = []
    for row in info.get("samples", []):
        gif = root / "samples" / row["gif"]
        if not gif.exists():
            continue
        frames = [root / "samples" / name for name in row.get("frames", [])]
        samples.append({"prompt": row["prompt"], "video": f"samples/{row['video']}",
                        "reading": (row.get("reading") or {}).get("says"),
                        "animation": _data_uri(gif.read_bytes(), "gif"),
                        "frames": [_data_uri(f.read_bytes(), "png") for f in frames if f.exists()]})
    if not samples:
        return None
    return {"samples": samples, "trained_on": info.get("trained_on"),
            "dit": training_facts(Path(info["dit_run"])) if info.get("dit_run") else None}
