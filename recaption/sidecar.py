"""`caption_original`: a caption that came with the source.

A caption named beside the source in a list file (`rushes curate inputs.csv`: `path,caption` columns,
see curation/inputs.py) comes first; curation records it in OUT/input_captions/. Otherwise, for a source `take07.mp4`, the first of these that exists is read (either `take07.<ext>` or
`take07.mp4.<ext>`):

- `.srt`: subtitles; a clip gets the text of the cues that overlap its time range, in order;
- `.json`: an object whose `caption`, `description` or `title` (the first present) is text, or a
  JSON string; every clip of the source gets it;
- `.txt`: the whole file (trimmed); every clip of the source gets it.

Without a sidecar, the container's own metadata is used: its `description`, `comment` or `title`
tag (the first present), as a camera, an editor or `ffmpeg -metadata comment=...` wrote it.

A sidecar that cannot be read (bad JSON, no cue times, not UTF-8) is skipped with a warning naming
it: the clip is captioned all the same, without an original caption. The trainer's caption blend
uses `caption_original` where it exists (training/data.py).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from curation.core import schema
from curation.core.rundir import RunDir, append_part, is_remote, local_file, now_utc, read_table
from curation.core.schema import IC, M

log = logging.getLogger(__name__)

SIDECAR_SUFFIXES = (".srt", ".json", ".txt")
JSON_KEYS = ("caption", "description", "title")
CONTAINER_TAGS = ("description", "comment", "title")
SRT_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
SRT_TIMES = re.compile(rf"^\s*{SRT_TIME.pattern}\s*-->\s*{SRT_TIME.pattern}")
MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>, <font ...>, {\an8}


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


class SidecarError(ValueError):
    """A sidecar file is there but cannot be read; the message names it."""


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def parse_srt(text: str, path: Path) -> list[Cue]:
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        lines = block.split("\n")
        timing = next((i for i, line in enumerate(lines[:2]) if SRT_TIMES.match(line)), None)
        if timing is None:
            continue
        t = SRT_TIMES.match(lines[timing]).groups()
        words = " ".join(MARKUP.sub("", line).strip() for line in lines[timing + 1:])
        words = " ".join(words.split())
        if words:
            cues.append(Cue(_seconds(*t[:4]), _seconds(*t[4:]), words))
    if not cues and text.strip():
        raise SidecarError(f"{path}: no subtitle cue with times ('00:00:01,000 --> 00:00:04,000') found")
    return cues


def read_sidecar(path: Path) -> str | list[Cue]:
    """The text of a .txt or .json sidecar, or the cues of an .srt one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SidecarError(f"{path}: not UTF-8 text ({e.reason})") from None
    if path.suffix.lower() == ".srt":
        return parse_srt(text, path)
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise SidecarError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
        if isinstance(value, dict):
            value = next((value[k] for k in JSON_KEYS if isinstance(value.get(k), str)), None)
        if not isinstance(value, str):
            raise SidecarError(f"{path}: expected a JSON string or an object with one of {', '.join(JSON_KEYS)} as text")
        return " ".join(value.split())
    return " ".join(text.split())


def local_source(source: str) -> Path | None:
    """The file of a local source (a path or a file:// URL), or None for a remote one."""
    return None if is_remote(source) else local_file(source).expanduser()


def sidecar_for(source: str) -> Path | None:
    """The sidecar file of a local source, or None (remote sources have none). The suffix may be in
    capitals, as cameras and drones write them (`DJI_0001.SRT`)."""
    path = local_source(source)
    if path is None:
        return None
    for suffix in SIDECAR_SUFFIXES:
        for spelled in (suffix, suffix.upper()):
            for candidate in (path.with_suffix(spelled), path.with_name(path.name + spelled)):
                if candidate != path and candidate.is_file():
                    return candidate
    return None


def container_caption(source: str) -> str | None:
    """The source's description, comment or title tag, or None (no tag, a remote source, or unreadable:
    curation said so)."""
    path = local_source(source)
    if path is None or not path.is_file():
        return None
    import av

    try:
        with av.open(str(path)) as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
    except (av.error.FFmpegError, OSError):
        return None
    text = next((tags[t] for t in CONTAINER_TAGS if str(tags.get(t) or "").strip()), None)
    return " ".join(text.split()) if text else None


def input_captions(run: RunDir) -> dict[str, str]:
    """{source: caption} recorded from list files, the newest row per source."""
    table = read_table(run.input_captions, schema.INPUT_CAPTIONS)
    newest: dict[str, tuple] = {}
    for row in table.to_pylist():
        if row[IC.source] not in newest or row[IC.created_at] >= newest[row[IC.source]][0]:
            newest[row[IC.source]] = (row[IC.created_at], row[IC.caption])
    return {source: caption for source, (_, caption) in newest.items()}


def record_input_captions(run: RunDir, captions: dict) -> int:
    """Append the list-file captions (`{source: inputs.InputCaption}`) that differ from those recorded."""
    known = input_captions(run)
    rows = [{IC.source: source, IC.caption: c.caption, IC.list_file: c.list_file, IC.created_at: now_utc()}
            for source, c in captions.items() if known.get(source) != c.caption]
    append_part(run.input_captions, rows, schema.INPUT_CAPTIONS, "inputs")
    return len(rows)


class SidecarCaptions:
    """caption_original per clip: the list file's caption, else each source's sidecar (read once per worker)."""

    def __init__(self, given: dict[str, str] | None = None):
        self.read: dict[str, str | list[Cue] | None] = dict(given or {})

    def caption(self, row: dict) -> str | None:
        source = row.get(M.source)
        if not source:
            return None
        if source not in self.read:
            self.read[source] = self._load(str(source))
        content = self.read[source]
        if content is None or isinstance(content, str):
            return content or None
        start, end = row.get(M.start_time), row.get(M.end_time)
        if start is None or end is None:
            return None
        text = " ".join(c.text for c in content if c.end > start and c.start < end)
        return text or None

    @staticmethod
    def _load(source: str) -> str | list[Cue] | None:
        path = sidecar_for(source)
        if path is None:
            return container_caption(source)
        try:
            return read_sidecar(path)
        except (SidecarError, OSError) as e:
            log.warning("caption_original left empty: %s", e)
            return None
