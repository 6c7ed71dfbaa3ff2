"""Curation's part of the run report: the funnel, score histograms, kept and filtered clips, quarantine, settings.

`clips_section(tables)` takes the report's `RunTables` (workflows/report.py: plain rows, read once)
and returns the context of templates/report_section.html.j2. The funnel is counted here too, from
the same rows, so the console and the page print the same numbers. matplotlib is imported only
while the histograms are drawn.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from curation.core import schema
from curation.core.models import is_untrained
from curation.filters import RULES, Limit

M, Q = schema.M, schema.Q

MAX_KEPT_THUMBS = 48
MAX_THUMBS_PER_REASON = 12
NO_REASON = "(no reason recorded)"


@dataclass
class Funnel:
    processed: int = 0
    quarantined: int = 0
    detected: int = 0
    kept: int = 0
    filtered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # filter reason -> clips, most common first
    clip_failures: int = 0  # quarantine rows of single clips (extraction)
    duplicates: int = 0  # byte-identical copies of another input, curated once under it

    @property
    def inputs(self) -> int:
        return self.processed + self.quarantined + self.duplicates


def count_funnel(clips: list[dict], quarantine: list[dict], processed: int) -> Funnel:
    """The funnel from the clip rows (later decisions applied), the quarantine rows and the manifest part count."""
    statuses = Counter(r[M.status] for r in clips)
    reasons = Counter(reason for r in clips for reason in (r[M.filter_reasons] or []))
    whole = [r for r in quarantine if r[Q.clip_id] is None]
    return Funnel(
        processed=processed,
        quarantined=len({r[Q.source] for r in whole if r[Q.stage] != schema.STAGE_DUPLICATE}),
        duplicates=len({r[Q.source] for r in whole if r[Q.stage] == schema.STAGE_DUPLICATE}),
        detected=len(clips),
        kept=statuses.get(schema.STATUS_KEPT, 0),
        filtered=statuses.get(schema.STATUS_FILTERED, 0),
        reasons=dict(reasons.most_common()),
        clip_failures=sum(1 for r in quarantine if r[Q.clip_id] is not None),
    )


def funnel_lines(f: Funnel) -> list[tuple[str, int]]:
    """(label, count) rows; two leading spaces per level of nesting."""
    lines = [("inputs", f.inputs), ("  quarantined", f.quarantined)]
    if f.duplicates:
        lines.append(("  duplicate inputs", f.duplicates))
    lines += [("  processed", f.processed), ("clips detected", f.detected), ("  filtered", f.filtered)]
    lines += [(f"    {reason}", n) for reason, n in f.reasons.items()]
    lines.append(("  kept", f.kept))
    return lines


def clips_section(tables) -> dict:
    clips = tables.clips
    kept = [r for r in clips if r[M.status] == schema.STATUS_KEPT]
    return {
        "funnel": _funnel_rows(count_funnel(clips, tables.quarantine, tables.processed)),
        "run_kind": run_kind_note(kept),
        "figures": _figures(clips, tables.cfg) if clips else [],
        "untrained_scores": sorted({r[M.aesthetic_model] for r in clips if is_untrained(r[M.aesthetic_model])}),
        "kept": [tables.card(r) for r in kept[:MAX_KEPT_THUMBS]],
        "kept_total": len(kept),
        "filtered": _filtered_groups(tables, clips),
        "quarantine": [{"source": r[Q.source], "stage": r[Q.stage], "clip": r[Q.clip_id] or "(whole input)",
                        "error": r[Q.error]} for r in tables.quarantine if r[Q.stage] != schema.STAGE_DUPLICATE],
        "losses": _losses(clips),
        "duplicates": [{"source": r[Q.source], "note": r[Q.error]} for r in tables.quarantine
                       if r[Q.stage] == schema.STAGE_DUPLICATE],
        "detectors": Counter(r[M.text_detector] for r in clips if r[M.text_detector]).most_common(),
        "configs": [{"hash": chash, "clips": n, "text": tables.configs[chash]}
                    for chash, n in Counter(r[M.config_hash] for r in clips).most_common()],
    }


def run_kind_note(kept: list[dict]) -> dict | None:
    """Which kind of run this is (clip files or source ranges), and what that means for its kept clips."""
    from curation.core.clips import CLIP_FREE, EXTRACTING, run_kind

    kind = run_kind(kept)
    if kind is None:
        return None
    with_file = sum(1 for r in kept if r.get(M.clip_path))
    if kind == EXTRACTING:
        note = "Every kept clip is an h264 file under clips/."
    elif kind == CLIP_FREE:
        note = ("No clip files (extract.enabled: false): a kept clip is its source plus a frame range, and "
                "captioning, indexing, sharding and the search page read its frames from the source. "
                "`rushes extract --out OUT` writes files for the clips wanted as files.")
    else:
        note = (f"Clip-free, and {with_file} of {len(kept)} kept clips have files since (`rushes extract`); "
                "the others are read from their sources.")
    return {"kind": kind, "note": note}


def _losses(clips: list[dict]) -> list[dict]:
    """Sources with frames that did not decode: how many, and where (from any one of their rows)."""
    by_source = {}
    for row in clips:
        if row.get(M.source_frames_lost):
            by_source.setdefault(row[M.source], row)
    return [{"source": source, "frames": row[M.source_frames_lost],
             "where": ", ".join(f"frames {g[M.start_frame]}-{g[M.end_frame]} ({g[M.start_time]:.2f}-{g[M.end_time]:.2f} s)"
                                for g in row[M.source_gaps] or [])}
            for source, row in sorted(by_source.items())]


def _funnel_rows(f: Funnel) -> list[dict]:
    rows = []
    for label, n in funnel_lines(f):
        level = (len(label) - len(label.lstrip())) // 2
        rows.append({"label": label.strip(), "n": n, "indent": f"{0.4 + 1.2 * level:.1f}em"})
    return rows


def _filtered_groups(tables, clips: list[dict]) -> list[dict]:
    """Filtered clips per reason, the most common reason first (a clip shows under each of its reasons)."""
    by_reason: dict[str, list[dict]] = {}
    for row in clips:
        if row[M.status] != schema.STATUS_KEPT:
            for reason in row[M.filter_reasons] or [NO_REASON]:
                by_reason.setdefault(reason, []).append(row)
    return [{"reason": reason, "total": len(rows), "cards": [tables.card(r) for r in rows[:MAX_THUMBS_PER_REASON]]}
            for reason, rows in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))]


# ---------------------------------------------------------------------------------------------
# Histograms


def score_thresholds(cfg) -> dict[str, list[tuple[str, float]]]:
    """Histogram column -> the config's thresholds on it (name, value), read off the filters' rules:
    the duration and every score (the manifest's float32 columns), so a new score shows up by itself."""
    columns = [M.duration] + [f.name for f in schema.MANIFEST if f.type == pa.float32()]
    thresholds: dict[str, list[tuple[str, float]]] = {c: [] for c in columns}
    for _reason, rule in RULES:
        if isinstance(rule, Limit) and rule.column in thresholds:
            value = getattr(cfg.filters, rule.setting)
            if value is not None:
                thresholds[rule.column].append((rule.setting, value))
    return thresholds


def _figures(clips: list[dict], cfg) -> list[dict]:
    """One histogram per score that has values (kept green, filtered grey), then the camera-motion bars."""
    figures = []
    for score, thresholds in score_thresholds(cfg).items():
        kept = [r[score] for r in clips if r[score] is not None and r[M.status] == schema.STATUS_KEPT]
        filtered = [r[score] for r in clips if r[score] is not None and r[M.status] != schema.STATUS_KEPT]
        if kept or filtered:
            figures.append({"name": score, "png": _histogram_png(score, kept, filtered, thresholds)})
    cameras = Counter(r[M.camera_motion] for r in clips if r[M.camera_motion] is not None)
    if cameras:
        figures.append({"name": M.camera_motion, "png": _bar_png(M.camera_motion, cameras)})
    return figures


def _histogram_png(score: str, kept: list[float], filtered: list[float], thresholds) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
    data = [x for x in (filtered, kept) if x]
    colors = [c for x, c in ((filtered, "#9e9e9e"), (kept, "#2e7d32")) if x]
    labels = [c for x, c in ((filtered, "filtered"), (kept, "kept")) if x]
    everything = kept + filtered
    lo, hi = min(everything), max(everything)
    for _, value in thresholds:
        lo, hi = min(lo, value), max(hi, value)
    if hi <= lo:  # every clip has the same value: one narrow bar, not a bar as wide as the plot
        lo, hi = lo - 0.5, hi + 0.5
    ax.hist(data, bins=20, range=(lo, hi), stacked=True, color=colors, label=labels)
    for name, value in thresholds:
        ax.axvline(value, color="#c62828", linestyle="--", linewidth=1.2)
        ax.annotate(f"{name}={value:g}", (value, ax.get_ylim()[1]), fontsize=7, color="#c62828",
                    rotation=90, va="top", ha="right")
    ax.set_title(score, fontsize=10)
    ax.set_ylabel("clips", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    return _png_base64(fig)


def _bar_png(title: str, counts: Counter) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
    names, values = zip(*counts.most_common(), strict=True)
    ax.bar(range(len(names)), values, color="#1565c0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    return _png_base64(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    return plt


def _png_base64(fig) -> str:
    plt = _pyplot()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()
