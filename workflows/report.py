"""The run report: the funnel printed at the end of a run, and OUT/report.html.

The report is one self-contained HTML file (images inlined) built from whatever tables exist in the
run directory, so it can be re-rendered at any time (`rushes report OUT`). It is made in three steps:

1. `read_run` reads the run's tables once into a `RunTables` (plain data: rows as dicts);
2. each package contributes a section: a function `section(tables) -> dict | None` returning the
   context of its template fragment (None leaves the section out), listed in `SECTIONS` with that
   fragment (`<package>/templates/...`); the function is imported only when the report is written;
3. `templates/report.html.j2` (Jinja2, autoescape on) lays the sections out.

Counting (all from the files, so the numbers add up by construction; see curation/report_section.py):
- inputs = processed + quarantined: a processed source has one manifest part (even with no clips), a
  quarantined one a row in quarantine.parquet without a clip_id;
- clips detected = kept + filtered, where "filtered" includes clips filtered after curation (rows of
  OUT/decisions/); a filtered clip has one or more reasons, so the per-reason counts can add up to
  more than the filtered count.
"""

from __future__ import annotations

import base64
import functools
import importlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.core import schema
from curation.core.rundir import RunDir, read_quarantine, read_table
from curation.core.tables import latest_captions, read_captions, read_clips
from curation.report_section import Funnel, count_funnel, funnel_lines

__all__ = ["SECTIONS", "Funnel", "RunTables", "funnel", "funnel_lines", "load_run_config", "print_funnel",
           "read_run", "write_report"]

M, E = schema.M, schema.EMB

# (section function "module:function", its template fragment "<package>/<file in package/templates/>")
SECTIONS: list[tuple[str, str]] = [
    ("curation.report_section:clips_section", "curation/report_section.html.j2"),
    ("recaption.report_section:captions_section", "recaption/report_section.html.j2"),
    ("indexing.report_section:embeddings_section", "indexing/report_section.html.j2"),
    ("training.report_section:training_section", "training/report_section.html.j2"),
]
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class RunTables:
    """Everything the report shows, read once. Sections only read it."""

    run: RunDir
    cfg: Any  # the CurateConfig whose thresholds the histograms draw
    clips: list[dict]  # read_clips (manifest + later scores and decisions), by source and start frame
    processed: int  # manifest parts: sources curated, one part each even with no clips
    quarantine: list[dict]
    configs: dict[str | None, str]  # curation config hash -> its YAML from OUT/configs/, or a not-found note
    captions: list[dict] | None  # every caption row; None when the run has no captions table
    latest_captions: list[dict]  # the newest good caption per clip
    embeddings: list[dict] | None  # kind and model of every vector; None when the run has none
    shard_files: int  # training shard parts

    def card(self, row: dict) -> dict:
        """A clip as a thumbnail card: the image inlined as a data URI (None when the file is absent)."""
        thumb = row.get(M.thumb_path)
        path = self.run.root / thumb if thumb else None
        image = (f"data:image/jpeg;base64,{base64.b64encode(path.read_bytes()).decode()}"
                 if path and path.exists() else None)
        facts = [Path(str(row[M.source])).name, f"frames {row[M.start_frame]}-{row[M.end_frame]}"]
        if row.get(M.duration) is not None:
            facts.append(f"{row[M.duration]:.1f} s")
        if row.get(M.camera_motion):
            facts.append(str(row[M.camera_motion]))
        if row.get(M.filter_reasons):
            facts.append(", ".join(row[M.filter_reasons]))
        return {"clip_id": str(row[M.clip_id]), "image": image, "facts": " · ".join(facts)}


def read_run(run: RunDir, cfg=None) -> RunTables:
    """Read every table the report shows, once; `cfg` defaults to the config most clips were made with."""
    clips = sorted(read_clips(run).to_pylist(), key=lambda r: (str(r[M.source]), r[M.start_frame] or 0))
    hashes = [chash for chash, _ in Counter(r[M.config_hash] for r in clips).most_common()]
    configs = {}
    for chash in hashes:
        path = _config_path(run, chash)
        configs[chash] = path.read_text() if path.exists() else "(config file not found)"
    captions = read_captions(run).to_pylist() if run.captions.exists() else None
    embeddings = None
    if run.embeddings.exists():
        embeddings = read_table(run.embeddings, schema.EMBEDDINGS).select([E.kind, E.model]).to_pylist()
    return RunTables(
        run=run,
        cfg=cfg if cfg is not None else _curate_config(run, hashes),
        clips=clips,
        processed=len(_manifest_parts(run)),
        quarantine=read_quarantine(run).to_pylist(),
        configs=configs,
        captions=captions,
        latest_captions=latest_captions(run).to_pylist() if captions else [],
        embeddings=embeddings,
        shard_files=sum(1 for _ in run.shards.rglob("*.parquet")) if run.shards.exists() else 0,
    )


def _manifest_parts(run: RunDir) -> list[Path]:
    if not run.manifest.exists():
        return []
    return [p for p in run.manifest.glob("*.parquet") if not p.name.startswith(".")]


def _config_path(run: RunDir, chash: str | None) -> Path:
    return run.root / "configs" / f"curate-{chash}.yaml"


def _curate_config(run: RunDir, hashes: list[str | None]):
    """The saved config of the most common hash (`hashes`: most clips first), else the defaults."""
    from curation.config import CurateConfig
    from curation.core.config import load_yaml

    named = [chash for chash in hashes if chash]
    # only the most common one: an older config's thresholds would mislead
    if named and _config_path(run, named[0]).exists():
        return load_yaml(_config_path(run, named[0]), CurateConfig)
    return CurateConfig()


def load_run_config(run: RunDir):
    """The curation config most manifest rows were made with (saved in OUT/configs/), else the defaults."""
    hashes = Counter(r[M.config_hash] for r in read_clips(run).select([M.config_hash]).to_pylist())
    return _curate_config(run, [chash for chash, _ in hashes.most_common()])


# ---------------------------------------------------------------------------------------------
# The funnel on the console


def funnel(run: RunDir) -> Funnel:
    """The run's funnel; reads only the clips and the quarantine (the console needs no more)."""
    return count_funnel(read_clips(run).to_pylist(), read_quarantine(run).to_pylist(), len(_manifest_parts(run)))


def run_kind_line(run: RunDir) -> str | None:
    """One line naming the run's kind (extracting, clip-free, or partly extracted since)."""
    from curation.report_section import run_kind_note

    kept = [r for r in read_clips(run).to_pylist() if r[M.status] == schema.STATUS_KEPT]
    note = run_kind_note(kept)
    return None if note is None else f"kind of run: {note['kind']}"


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

    atomic_write_bytes(run.report, render_report(read_run(run, cfg)).encode())
    return run.report


def render_report(tables: RunTables) -> str:
    sections, folders = [], {"workflows": TEMPLATES}
    for target, template in SECTIONS:
        module_name, func_name = target.split(":")
        module = importlib.import_module(module_name)
        # "<package>/<name>" is found in the templates/ folder beside the section's module
        folders.setdefault(template.split("/")[0], Path(module.__file__).parent / "templates")
        context = getattr(module, func_name)(tables)
        if context is not None:
            sections.append({"template": template, "context": context})
    root = tables.run.root.resolve()
    return _environment(tuple(sorted(folders.items()))).get_template("workflows/report.html.j2").render(
        title=f"rushes report: {root.name}", root=str(root), sections=sections, shard_files=tables.shard_files)


@functools.cache
def _environment(folders: tuple[tuple[str, Path], ...]):
    """Templates named "<package>/<name>", each package's from its folder; everything escaped."""
    import jinja2

    # FileSystemLoader, not PackageLoader: under pytest `curation` can resolve as the namespace package
    # tests/curation/, whose spec PackageLoader would search
    loader = jinja2.PrefixLoader({prefix: jinja2.FileSystemLoader(folder) for prefix, folder in folders})
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
