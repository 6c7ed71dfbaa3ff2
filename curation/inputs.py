"""What `rushes curate INPUT...` means: inputs resolved to an ordered, de-duplicated list of sources.

An input may be a video file, a directory (searched recursively for video extensions), a glob
pattern, a text file listing one input per line (`.txt`, `.lst`, `.list`; blank lines and `#`
comments ignored; relative paths are relative to the list file), a table of inputs with a caption
beside each (`.csv`, `.tsv` with a header row naming a `path` column and a `caption` column, or
`.jsonl` with one `{"path": ..., "caption": ...}` object per line), or an fsspec URL (`file://`,
`s3://`, `http(s)://`, ...). Local sources are named by their absolute path, remote ones by their URL.
A caption given in a table becomes the `caption_original` of every clip of that input's sources.

An input that names nothing (a missing file, a glob that matches nothing, a directory without
videos) is an `InputError` before any work starts. A source that disappears after that (deleted
mid-run, a remote file gone) is quarantined by the run with stage `input`.

What is found but cannot be read never stops a run: a symlink loop (`self.mp4 -> self.mp4`, a folder
link back to a folder above it), a dangling link, a file or folder without read permission is a
`Skipped` entry naming the path and why (`find_inputs`); the run records it (stage `input`) and curates
the rest. Byte-identical inputs under different names are found by `find_duplicates`: the first is
curated, the others are recorded as its duplicates.

Remote sources are fetched into a cache directory under the run directory (atomically) before they
are decoded; local ones are read where they are.
"""

from __future__ import annotations

import errno
import filecmp
import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from curation.core.rundir import cache_path_for, is_remote, is_url, local_file, source_key, temp_path  # noqa: F401 - names callers import from here
from curation.core.stage import PermanentError

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .wmv .flv .3gp .ogv .y4m .mxf .dv".split()
)
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
TABLE_EXTENSIONS = frozenset({".csv", ".tsv", ".jsonl"})  # list files with columns: path, caption
PATH_COLUMNS = ("path", "source", "video", "file")  # the first present names the input
CAPTION_COLUMNS = ("caption", "description", "text")
_GLOB_CHARS = set("*?[")
_FETCH_CHUNK = 4 << 20


class InputError(ValueError):
    """An input names nothing that can be curated; the message names it and says what to do."""


def is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Skipped:
    """A path found among the inputs that cannot be read; `reason` says why and what to do."""

    path: str
    reason: str


@dataclass
class Inputs:
    sources: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    captions: dict[str, InputCaption] = field(default_factory=dict)  # by source, from table list files


@dataclass(frozen=True)
class InputCaption:
    caption: str
    list_file: str


def resolve_inputs(inputs: Iterable[str], base_dir: Path | None = None) -> list[str]:
    """Sources named by `inputs`, in the order given, each once (unreadable paths left out)."""
    return find_inputs(inputs, base_dir).sources


def find_inputs(inputs: Iterable[str], base_dir: Path | None = None) -> Inputs:
    """Sources named by `inputs`, in the order given, each once; and what was skipped, each once."""
    found = Inputs()
    seen: set[str] = set()
    for item in inputs:
        for source in _resolve_one(str(item), Path(base_dir) if base_dir else Path.cwd(), set(), found.skipped,
                                   found.captions):
            if source not in seen:
                seen.add(source)
                found.sources.append(source)
    unique = {s.path: s for s in found.skipped}
    found.skipped = list(unique.values())
    return found


def unreadable(path: Path) -> str | None:
    """Why the local file at `path` cannot be read (a loop, a dangling link, no permission), or None."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{path} is a symlink loop (it points back at itself); fix or remove the link"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return (f"{path} is a dangling symlink (its target {os.readlink(path)} does not exist); "
                    "fix or remove the link")
        return f"{path} cannot be read ({e.strerror}); check the file"
    if not os.access(path, os.R_OK):
        return (f"{path} cannot be read: no read permission for this user; grant it (chmod a+r) and "
                "run again, the file is curated then")
    return None


def _resolve_one(item: str, base_dir: Path, list_files_open: set[Path], skipped: list[Skipped],
                 captions: dict[str, InputCaption]) -> list[str]:
    item = item.strip()
    if not item:
        return []
    if item.startswith("file://"):
        item = item[len("file://") :]
    elif is_url(item):
        return _resolve_url(item)
    path = Path(os.path.expanduser(item))
    if not path.is_absolute():
        path = base_dir / path
    path = Path(os.path.normpath(path))
    if any(c in item for c in _GLOB_CHARS) and not path.exists():
        matches = sorted(glob.glob(str(path), recursive=True))
        found = [str(Path(m)) for m in matches if Path(m).is_file() and is_video_name(m)]
        for m in matches:
            if Path(m).is_dir():
                found.extend(_videos_under(Path(m), skipped))
            elif Path(m).is_symlink() and not Path(m).exists() and is_video_name(m):
                _readable([str(Path(m))], skipped)  # a loop or dangling link: recorded, not curated
        if not found:
            raise InputError(
                f"input {item!r}: the glob pattern matches no video files "
                f"(extensions: {' '.join(sorted(VIDEO_EXTENSIONS))}); check the pattern"
            )
        return found
    if path.is_dir():
        skipped_before = len(skipped)
        found = _videos_under(path, skipped)
        if not found and len(skipped) == skipped_before:
            raise InputError(
                f"input {item!r}: the directory {path} holds no video files "
                f"(searched recursively for {' '.join(sorted(VIDEO_EXTENSIONS))})"
            )
        return found
    if path.is_file():
        if path.suffix.lower() in LIST_EXTENSIONS:
            return _read_list_file(path, list_files_open, skipped, captions)
        if path.suffix.lower() in TABLE_EXTENSIONS:
            return _read_table_list(path, list_files_open, skipped, captions)
        return _readable([str(path)], skipped)
    if path.is_symlink():  # a loop or a dangling link named on its own
        return _readable([str(path)], skipped)
    raise InputError(
        f"input {item!r} does not exist ({path}); give a video file, a directory, a glob "
        f"pattern, a list file (.txt) or a URL"
    )


def _readable(paths: list[str], skipped: list[Skipped]) -> list[str]:
    """`paths` that can be read; the others go to `skipped` with their reason."""
    good = []
    for p in paths:
        reason = unreadable(Path(p))
        if reason is None:
            good.append(p)
        else:
            skipped.append(Skipped(p, reason))
    return good


def _videos_under(directory: Path, skipped: list[Skipped]) -> list[str]:
    """Video files below `directory`. Folder links are not followed (a link to `.` would loop); one
    that points back at a folder above it is recorded as a loop, and unreadable folders as skipped."""

    def cannot_list(e: OSError) -> None:
        skipped.append(Skipped(str(e.filename), f"folder {e.filename} cannot be listed ({e.strerror}); grant "
                                                 "read and execute permission (chmod a+rx) and run again"))

    found = []
    top = os.path.realpath(directory)
    for root, dirs, files in os.walk(directory, onerror=cannot_list):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            link = Path(root) / d
            if link.is_symlink():
                target = os.path.realpath(link)
                if top == target or top.startswith(target + os.sep) or target.startswith(top + os.sep):
                    skipped.append(Skipped(str(link), f"{link} is a folder link to {target}, inside the inputs "
                                                      "already (a loop): not followed"))
        names = [f for f in files if not f.startswith(".") and is_video_name(f)]
        found.extend(_readable([str(Path(root) / f) for f in names], skipped))
    return sorted(found)


class Copies(dict):
    """{copy: the source curated instead}; `unverified` holds the copies matched by content
    fingerprint alone (their original, curated by an earlier run, can no longer be read)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unverified: set[str] = set()


def find_duplicates(sources: list[str], is_done: Callable[[str], bool] = lambda s: False,
                    recorded: dict[str, str] | None = None) -> Copies:
    """Local sources that are byte-identical copies of another: {copy: the source curated instead}.

    Only files of equal size are compared: by content fingerprint first (a few hundred KiB read),
    then byte for byte, so a copy is certain. Of each group, a source already curated (`is_done`)
    stays the original, else the first in input order. Remote sources are not compared.

    `recorded` ({fingerprint: source}, the sources an earlier run recorded in the same OUT) extends
    the comparison to them: a source not yet curated whose fingerprint is recorded for another source
    is its copy when the bytes agree, or, when that source can no longer be read, on the fingerprint
    alone (listed in `Copies.unverified`).
    """
    from curation.probe import fingerprint

    by_size: dict[int, list[str]] = {}
    for source in sources:
        if not is_remote(source):
            try:
                by_size.setdefault(os.stat(local_file(source)).st_size, []).append(source)
            except OSError:
                continue  # gone since it was found: the run quarantines it
    copies = Copies()
    for group in by_size.values():
        if len(group) < 2:
            continue
        by_print: dict[str, list[str]] = {}
        for source in group:
            try:
                by_print.setdefault(fingerprint(local_file(source)), []).append(source)
            except OSError:
                continue
        for same in by_print.values():
            same = sorted(same, key=lambda s: not is_done(s))  # stable: input order within done / not done
            while len(same) > 1:
                original, rest = same[0], []
                for other in same[1:]:
                    if is_done(other):
                        continue  # curated by an earlier run: its rows stay as they are
                    if _same_bytes(original, other):
                        copies[other] = original
                    else:
                        rest.append(other)  # same sampled chunks, other bytes: not a copy
                same = rest
    if recorded:
        ours = set(sources)
        earlier = {fp: s for fp, s in recorded.items() if s not in ours and not is_remote(s)}
        for source in sources:
            if is_remote(source) or source in copies or is_done(source):
                continue
            try:
                original = earlier.get(fingerprint(local_file(source)))
            except OSError:
                continue  # gone since it was found: the run quarantines it
            if original is None:
                continue
            try:
                with open(local_file(original), "rb"):
                    pass
            except OSError:  # moved or deleted since: the fingerprint is all there is to go on
                copies[source] = original
                copies.unverified.add(source)
                continue
            if _same_bytes(original, source):
                copies[source] = original
    return copies


def _same_bytes(a: str, b: str) -> bool:
    """Byte for byte; reads both files, which only real copies get this far to need (and curating
    the copy would read it all anyway)."""
    try:
        return filecmp.cmp(local_file(a), local_file(b), shallow=False)
    except OSError:  # one went away since it was found: not a copy; the run quarantines it
        return False


def _read_list_file(path: Path, list_files_open: set[Path], skipped: list[Skipped],
                    captions: dict[str, InputCaption]) -> list[str]:
    path = path.resolve()
    if path in list_files_open:
        raise InputError(f"list file {path} includes itself (directly or through another list file)")
    list_files_open = list_files_open | {path}
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"list file {path} is not text ({e}); a list file holds one input per line") from e
    found: list[str] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.extend(_resolve_one(line, path.parent, list_files_open, skipped, captions))
        except InputError as e:
            raise InputError(f"{path}, line {number}: {e}") from None
    return found


def _read_table_list(path: Path, list_files_open: set[Path], skipped: list[Skipped],
                     captions: dict[str, InputCaption]) -> list[str]:
    """A list file with columns: each entry's path resolved like a line of a plain list file, and its
    caption (if any) recorded for every source the entry names."""
    path = path.resolve()
    if path in list_files_open:
        raise InputError(f"list file {path} includes itself (directly or through another list file)")
    list_files_open = list_files_open | {path}
    found: list[str] = []
    for number, entry, caption in _table_entries(path):
        try:
            sources = _resolve_one(entry, path.parent, list_files_open, skipped, captions)
        except InputError as e:
            raise InputError(f"{path}, line {number}: {e}") from None
        found.extend(sources)
        if caption:
            for source in sources:
                captions[source] = InputCaption(" ".join(caption.split()), str(path))
    return found


def _table_entries(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, input, caption or None) of each row of a CSV, TSV or JSONL list file."""
    import csv
    import io
    import json

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"list file {path} is not UTF-8 text ({e})") from e
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}, line {number}: not a JSON object ({e.msg}); each line holds "
                                 '{"path": ..., "caption": ...}') from None
            if not isinstance(obj, dict):
                raise InputError(f'{path}, line {number}: each line holds an object {{"path": ..., "caption": ...}}')
            rows.append((number, obj))
    else:
        # a StringIO with newline="" keeps line breaks inside quoted captions
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if not any(c in header for c in PATH_COLUMNS):
            raise InputError(f"list file {path} has no header row naming a path column (one of "
                             f"{', '.join(PATH_COLUMNS)}); its first line reads {', '.join(reader.fieldnames or [])!r}")
        rows = [(reader.line_num, {(k or "").strip().lower(): v for k, v in row.items()}) for row in reader]
    entries = []
    for number, row in rows:
        item = next((row[c] for c in PATH_COLUMNS if isinstance(row.get(c), str) and row[c].strip()), None)
        if item is None:
            raise InputError(f"{path}, line {number}: no path (give one of the columns {', '.join(PATH_COLUMNS)})")
        caption = next((row[c] for c in CAPTION_COLUMNS if isinstance(row.get(c), str) and row[c].strip()), None)
        entries.append((number, item.strip(), caption))
    return entries


def _resolve_url(url: str) -> list[str]:
    """A remote URL: globs and directories are listed (s3:// and the like), http(s) is taken as named."""
    if url.startswith(("http://", "https://")):
        return [url]
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        if any(c in path for c in _GLOB_CHARS):
            names = sorted(fs.glob(path))
        elif fs.isdir(path):
            names = sorted(fs.find(path))
        else:
            return [url]
    except ImportError as e:
        raise InputError(f"input {url!r}: this kind of URL needs an extra package ({e})") from e
    except Exception as e:  # noqa: BLE001 - no network, no credentials, no such bucket: all mean "cannot list"
        raise InputError(f"input {url!r} cannot be listed ({type(e).__name__}: {e}); check the URL, the "
                         f"network and your credentials") from e
    protocol = url.split("://", 1)[0]
    found = [f"{protocol}://{name}" for name in names if is_video_name(name)]
    if not found:
        raise InputError(f"input {url!r} matches no video files")
    return found


def local_path(source: str, cache_dir: Path) -> Path:
    """Where a source can be decoded: itself if local, else its copy in `cache_dir` (fetched once).

    A local source that no longer exists, or a remote one that is not found, is a PermanentError
    (the run quarantines it); other fetch errors (a dropped connection) propagate, so the run
    retries the source next time.
    """
    if not is_remote(source):
        path = local_file(source)
        if not path.is_file():
            raise PermanentError(f"input {source} no longer exists (it was there when the run started)")
        return path
    target = cache_path_for(source, cache_dir)
    if target.exists():
        return target
    import fsspec

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)  # names its writer: a later run never removes a live download
    try:
        with fsspec.open(source, "rb") as remote, open(tmp, "wb") as local:
            while chunk := remote.read(_FETCH_CHUNK):
                local.write(chunk)
        os.replace(tmp, target)
    except FileNotFoundError as e:
        raise PermanentError(f"remote input {source} was not found ({e})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
