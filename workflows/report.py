"""The run report: the funnel printed at the end of a run, and OUT/report.html.

The report is one self-contained HTML file (images inlined) built from whatever tables exist in the
run directory, so it can be re-rendered at any time (`rushes report OUT`). It is a list of sections;
each is a function `section(run: RunDir, cfg) -> str | None` returning an HTML fragment, or None
when its table is absent. Curation's sections live here; another stage adds its own by appending
"module:function" to `SECTIONS` (imported only when the report is written).

Counting (all from the files, so the numbers add up by construction):
- inputs = processed + quarantined: a processed source has one manifest part (even with no clips), a
  quarantined one a row in quarantine.parquet without a clip_id;
- clips detected = kept + filtered; a filtered clip has one or more reasons, so the per-reason
  counts can add up to more than the filtered count.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from curation.core import schema
from curation.core.rundir import RunDir, read_manifest, read_quarantine, read_table

M, Q = schema.M, schema.Q

SECTIONS: list[str] = [
    "workflows.report:funnel_section",
    "workflows.report:histogram_section",
    "workflows.report:kept_section",
    "workflows.report:filtered_section",
    "workflows.report:quarantine_section",
    "workflows.report:captions_section",
    "workflows.report:embeddings_section",
    "workflows.report:other_tables_section",
    "workflows.report:settings_section",
]
MAX_KEPT_THUMBS = 48
MAX_THUMBS_PER_REASON = 12


@dataclass
class Funnel:
    processed: int = 0
    quarantined: int = 0
    detected: int = 0
    kept: int = 0
    filtered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # filter reason -> clips, most common first
    clip_failures: int = 0  # quarantine rows of single clips (extraction)

    @property
    def inputs(self) -> int:
        return self.processed + self.quarantined


def funnel(run: RunDir) -> Funnel:
    manifest = read_manifest(run)
    quarantine = read_quarantine(run)
    parts = [p for p in run.manifest.glob("*.parquet") if not p.name.startswith(".")] if run.manifest.exists() else []
    statuses = Counter(manifest.column(M.status).to_pylist())
    reasons = Counter(r for rs in manifest.column(M.filter_reasons).to_pylist() for r in (rs or []))
    clip_ids = quarantine.column(Q.clip_id).to_pylist()
    sources = quarantine.column(Q.source).to_pylist()
    return Funnel(
        processed=len(parts),
        quarantined=len({s for s, c in zip(sources, clip_ids, strict=True) if c is None}),
        detected=manifest.num_rows,
        kept=statuses.get(schema.STATUS_KEPT, 0),
        filtered=statuses.get(schema.STATUS_FILTERED, 0),
        reasons=dict(reasons.most_common()),
        clip_failures=sum(1 for c in clip_ids if c is not None),
    )


def funnel_lines(f: Funnel) -> list[tuple[str, int]]:
    lines = [("inputs", f.inputs), ("  quarantined", f.quarantined), ("  processed", f.processed),
             ("clips detected", f.detected), ("  filtered", f.filtered)]
    lines += [(f"    {reason}", n) for reason, n in f.reasons.items()]
    lines.append(("  kept", f.kept))
    return lines


def print_funnel(f: Funnel, console) -> None:
    console.print("funnel:")
    for label, n in funnel_lines(f):
        console.print(f"  {label:<28s}{n:>8d}")
    if f.reasons and sum(f.reasons.values()) > f.filtered:
        console.print("  (a clip can be filtered for several reasons)")


# ---------------------------------------------------------------------------------------------
# HTML


def write_report(run: RunDir, cfg=None) -> Path:
    """Render OUT/report.html from the tables in `run` (atomically); returns its path."""
    from curation.core.rundir import atomic_write_bytes

    cfg = cfg if cfg is not None else load_run_config(run)
    body = []
    for target in SECTIONS:
        module_name, func_name = target.split(":")
        fragment = getattr(importlib.import_module(module_name), func_name)(run, cfg)
        if fragment:
            body.append(fragment)
    page = _PAGE.format(title=html.escape(f"rushes report: {run.root.resolve().name}"),
                        root=html.escape(str(run.root.resolve())), body="\n".join(body))
    atomic_write_bytes(run.report, page.encode())
    return run.report


def load_run_config(run: RunDir):
    """The curation config most manifest rows were made with (saved in OUT/configs/), else the defaults."""
    from curation.config import CurateConfig
    from curation.core.config import load_yaml

    hashes = Counter(h for h in read_manifest(run).column(M.config_hash).to_pylist() if h)
    for chash, _ in hashes.most_common(1):
        path = run.root / "configs" / f"curate-{chash}.yaml"
        if path.exists():
            return load_yaml(path, CurateConfig)
    return CurateConfig()


def funnel_section(run: RunDir, cfg) -> str:
    rows = []
    for label, n in funnel_lines(funnel(run)):
        indent = (len(label) - len(label.lstrip())) // 2  # two spaces per level in funnel_lines
        rows.append(f"<tr><td style='padding-left:{0.4 + 1.2 * indent:.1f}em'>{html.escape(label.strip())}"
                    f"</td><td class=n>{n}</td></tr>")
    return f"<section><h2>Funnel</h2><table class=funnel>{''.join(rows)}</table></section>"


def _score_thresholds(cfg) -> dict[str, list[tuple[str, float]]]:
    f = cfg.filters
    thresholds = {
        M.duration: [("min_duration", f.min_duration), ("max_duration", f.max_duration)],
        M.motion_score: [("min_motion", f.min_motion), ("max_motion", f.max_motion)],
        M.luminance_mean: [("min_luminance", f.min_luminance), ("max_luminance", f.max_luminance)],
        M.sharpness: [("min_sharpness", f.min_sharpness)],
        M.text_area: [("max_text_area", f.max_text_area)],
        M.black_fraction: [],
        M.bright_fraction: [],
        M.motion_p90: [],
        M.aesthetic_score: [],
    }
    return {score: [(n, v) for n, v in items if v is not None] for score, items in thresholds.items()}


def histogram_section(run: RunDir, cfg) -> str | None:
    manifest = read_manifest(run)
    if not manifest.num_rows:
        return None
    status = manifest.column(M.status).to_pylist()
    figures = []
    for score, thresholds in _score_thresholds(cfg).items():
        values = manifest.column(score).to_pylist()
        if all(v is None for v in values):
            continue
        kept = [v for v, s in zip(values, status, strict=True) if v is not None and s == schema.STATUS_KEPT]
        filtered = [v for v, s in zip(values, status, strict=True) if v is not None and s != schema.STATUS_KEPT]
        figures.append(_figure(score, _histogram_png(score, kept, filtered, thresholds)))
    cameras = Counter(manifest.column(M.camera_motion).to_pylist())
    cameras.pop(None, None)
    if cameras:
        figures.append(_figure(M.camera_motion, _bar_png(M.camera_motion, cameras)))
    return ("<section><h2>Scores</h2><p>Kept clips in green, filtered in grey; dashed lines are the "
            "filter thresholds of the run's config.</p><div class=grid>" + "".join(figures) + "</div></section>")


def _figure(caption: str, png: bytes) -> str:
    return (f"<figure class=plot><img alt='{html.escape(caption)}' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'></figure>")


def _histogram_png(score: str, kept: list[float], filtered: list[float], thresholds) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    return _png(fig)


def _bar_png(title: str, counts: Counter) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
    names, values = zip(*counts.most_common(), strict=True)
    ax.bar(range(len(names)), values, color="#1565c0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _thumbs(run: RunDir, rows: list[dict]) -> str:
    cards = []
    for row in rows:
        thumb = row.get(M.thumb_path)
        path = run.root / thumb if thumb else None
        img = (f"<img alt='' src='data:image/jpeg;base64,{base64.b64encode(path.read_bytes()).decode()}'>"
               if path and path.exists() else "<div class=nothumb>no thumbnail</div>")
        facts = [Path(str(row[M.source])).name, f"frames {row[M.start_frame]}-{row[M.end_frame]}"]
        if row.get(M.duration) is not None:
            facts.append(f"{row[M.duration]:.1f} s")
        if row.get(M.camera_motion):
            facts.append(str(row[M.camera_motion]))
        if row.get(M.filter_reasons):
            facts.append(", ".join(row[M.filter_reasons]))
        cards.append(f"<figure class=thumb title='{html.escape(str(row[M.clip_id]))}'>{img}"
                     f"<figcaption>{html.escape(' · '.join(facts))}</figcaption></figure>")
    return "<div class=thumbs>" + "".join(cards) + "</div>"


def _rows(run: RunDir) -> list[dict]:
    return sorted(read_manifest(run).to_pylist(), key=lambda r: (str(r[M.source]), r[M.start_frame] or 0))


def kept_section(run: RunDir, cfg) -> str | None:
    kept = [r for r in _rows(run) if r[M.status] == schema.STATUS_KEPT]
    if not kept:
        return None
    shown = kept[:MAX_KEPT_THUMBS]
    more = f" (first {len(shown)} of {len(kept)})" if len(kept) > len(shown) else ""
    return f"<section><h2>Kept clips{more}</h2>{_thumbs(run, shown)}</section>"


def filtered_section(run: RunDir, cfg) -> str | None:
    by_reason: dict[str, list[dict]] = {}
    for row in _rows(run):
        if row[M.status] != schema.STATUS_KEPT:
            for reason in row[M.filter_reasons] or ["(no reason recorded)"]:
                by_reason.setdefault(reason, []).append(row)
    if not by_reason:
        return None
    parts = ["<section><h2>Filtered clips, by reason</h2>"]
    for reason, rows in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        shown = rows[:MAX_THUMBS_PER_REASON]
        more = f", first {len(shown)} shown" if len(rows) > len(shown) else ""
        parts.append(f"<h3>{html.escape(reason)} ({len(rows)} clips{more})</h3>{_thumbs(run, shown)}")
    return "".join(parts) + "</section>"


def quarantine_section(run: RunDir, cfg) -> str:
    rows = read_quarantine(run).to_pylist()
    if not rows:
        return "<section><h2>Quarantine</h2><p>No input was quarantined.</p></section>"
    body = "".join(
        f"<tr><td>{html.escape(str(r[Q.source]))}</td><td>{html.escape(str(r[Q.stage]))}</td>"
        f"<td>{html.escape(r[Q.clip_id] or '(whole input)')}</td><td>{html.escape(str(r[Q.error]))}</td></tr>"
        for r in rows
    )
    return (f"<section><h2>Quarantine ({len(rows)})</h2><table class=q><tr><th>source</th><th>stage</th>"
            f"<th>clip</th><th>error</th></tr>{body}</table></section>")


def captions_section(run: RunDir, cfg) -> str | None:
    """Captions per captioner (good and failed) and a few of the newest good ones beside their clips."""
    if not run.captions.exists():
        return None
    from curation.core.tables import latest_captions, read_captions

    C = schema.CAP
    counts: dict[str, list[int]] = {}
    for row in read_captions(run).select([C.captioner, C.error]).to_pylist():
        counts.setdefault(row[C.captioner], [0, 0])[row[C.error] is not None] += 1
    table = "".join(f"<tr><td>{html.escape(str(name))}</td><td class=n>{good}</td><td class=n>{failed}</td></tr>"
                    for name, (good, failed) in sorted(counts.items()))
    by_id = {r[M.clip_id]: r for r in read_manifest(run).to_pylist()}
    examples = []
    for cap in latest_captions(run).to_pylist()[:8]:
        clip = by_id.get(cap[C.clip_id])
        if clip is None:
            continue
        examples.append(f"<div class=cap>{_thumbs(run, [clip])}<p><b>{html.escape(str(cap[C.caption_short]))}</b>"
                        f"<br>{html.escape(str(cap[C.caption_dense]))}<br><small>{html.escape(str(cap[C.captioner]))}"
                        f" · prompt {html.escape(str(cap[C.prompt_version]))}</small></p></div>")
    return (f"<section><h2>Captions</h2><table class=funnel><tr><th>captioner</th><th>good</th><th>failed</th></tr>"
            f"{table}</table>{''.join(examples)}</section>")


def embeddings_section(run: RunDir, cfg) -> str | None:
    """Vectors per model and kind; an untrained placeholder model is named as such."""
    if not run.embeddings.exists():
        return None
    E = schema.EMB
    counts = Counter((r[E.kind], r[E.model]) for r in read_table(run.embeddings, schema.EMBEDDINGS)
                     .select([E.kind, E.model]).to_pylist())
    rows = "".join(f"<tr><td>{html.escape(str(kind))}</td><td>{html.escape(str(model))}</td><td class=n>{n}</td></tr>"
                   for (kind, model), n in sorted(counts.items()))
    untrained = any("untrained" in str(model) for _, model in counts)
    note = ("<p><b>Untrained placeholder model:</b> these vectors come from random weights; search results and "
            "near-duplicate decisions made with them mean little. Configure real weights (docs/indexing.md).</p>"
            if untrained else "")
    return (f"<section><h2>Embeddings</h2>{note}<table class=funnel><tr><th>kind</th><th>model</th><th>vectors</th>"
            f"</tr>{rows}</table></section>")


def other_tables_section(run: RunDir, cfg) -> str | None:
    """Tables later stages write that have no section of their own yet (training shards)."""
    items = []
    if run.shards.exists():
        items.append(f"<tr><td>shards/</td><td class=n>{sum(1 for _ in run.shards.rglob('*.parquet'))} files</td></tr>")
    if not items:
        return None
    return f"<section><h2>Other tables</h2><table class=funnel>{''.join(items)}</table></section>"


def settings_section(run: RunDir, cfg) -> str | None:
    """The curation configs behind the manifest's rows (OUT/configs/), and the models they used."""
    manifest = read_manifest(run)
    hashes = Counter(manifest.column(M.config_hash).to_pylist())
    detectors = Counter(manifest.column(M.text_detector).to_pylist())
    detectors.pop(None, None)
    parts = ["<section><h2>Settings</h2>"]
    if detectors:
        parts.append("<p>Text detector: " + ", ".join(f"{html.escape(str(d))} ({n} clips)" for d, n in
                                                       detectors.most_common()) + "</p>")
    for chash, n in hashes.most_common():
        path = run.root / "configs" / f"curate-{chash}.yaml"
        text = path.read_text() if path.exists() else "(config file not found)"
        parts.append(f"<details><summary>curation config {html.escape(str(chash))} ({n} clips)</summary>"
                     f"<pre>{html.escape(text)}</pre></details>")
    return "".join(parts) + "</section>" if len(parts) > 1 else None


_PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #212121; }}
h1 {{ font-size: 1.4em; margin-bottom: 0.2em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }}
.sub {{ color: #757575; font-size: 0.9em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ padding: 0.2em 0.6em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 0.5em; }} figure {{ margin: 0; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 0.6em; }}
.thumb {{ width: 180px; }} .thumb img {{ width: 180px; border-radius: 3px; display: block; }}
.thumb figcaption {{ font-size: 0.72em; color: #555; overflow-wrap: anywhere; }}
.nothumb {{ width: 180px; height: 100px; background: #eee; color: #999; font-size: 0.8em;
            display: flex; align-items: center; justify-content: center; }}
table.q td:last-child {{ max-width: 60em; }}
.cap {{ display: flex; gap: 1em; margin: 0.8em 0; max-width: 70em; }} .cap p {{ margin: 0; font-size: 0.9em; }}
</style></head><body>
<h1>{title}</h1><div class=sub>{root}</div>
{body}
</body></html>
"""
