"""Recaption's part of the run report: captions per captioner, and a few of the newest beside their clips.

`captions_section(tables)` takes the report's `RunTables` (workflows/report.py: plain rows, read
once) and returns the context of templates/report_section.html.j2, or None when the run has no
captions table.
"""

from __future__ import annotations

from curation.core import schema

M, CAP = schema.M, schema.CAP

MAX_EXAMPLES = 8


def captions_section(tables) -> dict | None:
    if tables.captions is None:
        return None
    counts: dict[str, list[int]] = {}  # captioner -> [good, failed]
    for row in tables.captions:
        counts.setdefault(row[CAP.captioner], [0, 0])[row[CAP.error] is not None] += 1
    clips = {r[M.clip_id]: r for r in tables.clips}
    examples = []
    for cap in tables.latest_captions:
        clip = clips.get(cap[CAP.clip_id])
        if clip is None:  # a caption of a clip no longer in the manifest
            continue
        examples.append({"card": tables.card(clip), "short": cap[CAP.caption_short], "dense": cap[CAP.caption_dense],
                         "captioner": cap[CAP.captioner], "prompt_version": cap[CAP.prompt_version]})
        if len(examples) == MAX_EXAMPLES:
            break
    return {"captioners": [{"name": name, "good": good, "failed": failed}
                           for name, (good, failed) in sorted(counts.items(), key=lambda kv: str(kv[0]))],
            "examples": examples}
