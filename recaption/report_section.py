"""Recaption's part of the run report: captions per captioner, how often they agree with the clips'
measurements (per captioner and signal), the disagreements, and a few of the newest beside their clips.

`captions_section(tables)` takes the report's `RunTables` (workflows/report.py: plain rows, read
once) and returns the context of templates/report_section.html.j2, or None when the run has no
captions table.
"""

from __future__ import annotations

from curation.core import schema

M, CAP, CHK = schema.M, schema.CAP, schema.CHK

MAX_EXAMPLES = 8
MAX_DISAGREEMENTS = 12


def compared_rows(captions: list[dict], kept: set[str] | None = None) -> list[dict]:
    """The newest row with comparisons of each (captioner, clip), of the kept clips when `kept` is given:
    a retried or re-checked clip counts once, as it stands now; rows written before the comparison
    existed (signal_checks null) are not counted."""
    newest: dict[tuple[str, str], dict] = {}
    for row in captions:
        if row.get(CAP.signal_checks) is None or (kept is not None and row[CAP.clip_id] not in kept):
            continue
        key = (str(row[CAP.captioner]), str(row[CAP.clip_id]))
        if key not in newest or str(row.get(CAP.created_at) or "") >= str(newest[key].get(CAP.created_at) or ""):
            newest[key] = row
    return list(newest.values())


def agreement_rates(captions: list[dict], kept: set[str] | None = None) -> tuple[list[str], list[dict]]:
    """(signals compared, one row per captioner: {name, cells: [{agree, compared, rate}]}).

    A caption agrees on a signal when every comparison of that signal (dense and short) agrees; each
    clip counts once per captioner, by its newest compared row (`compared_rows`)."""
    from recaption.agreement import SIGNALS

    counts: dict[str, dict[str, list[int]]] = {}  # captioner -> signal -> [agree, compared]
    for row in compared_rows(captions, kept):
        checks = row[CAP.signal_checks]
        by_signal: dict[str, bool] = {}
        for c in checks:
            by_signal[c[CHK.signal]] = by_signal.get(c[CHK.signal], True) and bool(c[CHK.agrees])
        per = counts.setdefault(str(row[CAP.captioner]), {})
        for signal, agrees in by_signal.items():
            cell = per.setdefault(signal, [0, 0])
            cell[0] += agrees
            cell[1] += 1
    signals = [s for s in SIGNALS if any(s in per for per in counts.values())]
    rows = []
    for name in sorted(counts):
        cells = []
        for signal in signals:
            agree, compared = counts[name].get(signal, (0, 0))
            cells.append({"agree": agree, "compared": compared, "rate": agree / compared if compared else None})
        rows.append({"name": name, "cells": cells})
    return signals, rows


def disagreements(captions: list[dict], limit: int = MAX_DISAGREEMENTS, kept: set[str] | None = None) -> list[dict]:
    """The newest disagreements: clip, captioner, signal, what the caption says and what was measured (of the
    rows `agreement_rates` counts)."""
    found = []
    for row in sorted(compared_rows(captions, kept), key=lambda r: str(r.get(CAP.created_at)), reverse=True):
        for c in row.get(CAP.signal_checks) or []:
            if not c[CHK.agrees]:
                found.append({"clip_id": row[CAP.clip_id], "captioner": row[CAP.captioner], "signal": c[CHK.signal],
                              "field": c[CHK.field], "caption": c[CHK.caption], "measured": c[CHK.measured],
                              "failed": row[CAP.error] is not None})
                if len(found) == limit:
                    return found
    return found


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
    kept = {r[M.clip_id] for r in tables.clips if r[M.status] == schema.STATUS_KEPT}
    signals, agreement = agreement_rates(tables.captions, kept)
    return {"captioners": [{"name": name, "good": good, "failed": failed}
                           for name, (good, failed) in sorted(counts.items(), key=lambda kv: str(kv[0]))],
            "examples": examples, "signals": signals, "agreement": agreement,
            "disagreements": disagreements(tables.captions, kept=kept)}
