"""What `rushes curate INPUT...` means: inputs resolved to an ordered, de-duplicated list of sources.

An input may be a video file, a directory (searched recursively for video extensions), a glob
pattern, a text file listing one input per line (`.txt`, `.lst`, `.list`; blank lines and `#`
comments ignored; relative paths are relative to the list file), or an fsspec URL (`file://`,
`s3://`, `http(s)://`, ...). Local sources are named by their absolute path, remote ones by their URL.

An input that names nothing (a missing file, a glob that matches nothing, a directory without
videos) is an `InputError` before any work starts. A source that disappears after that (deleted
mid-run, a remote file gone) is quarantined by the run with stage `input`.

Remote sources are fetched into a cache directory under the run directory (atomically) before they
are decoded; local ones are read where they are.
"""

from __future__ import annotations

import glob
import hashlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from curation.core.stage import PermanentError

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .wmv .flv .3gp .ogv .y4m .mxf .dv".split()
)
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = set("*?[")
_FETCH_CHUNK = 4 << 20


class InputError(ValueError):
    """An input names nothing that can be curated; the message names it and says what to do."""


def is_url(text: str) -> bool:
    return "://" in text and not text.startswith("/")


def is_remote(source: str) -> bool:
    return is_url(source) and not source.startswith("file://")


def is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def source_key(source: str) -> str:
    """Short stable name of a source, used to name its manifest and quarantine parts."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def resolve_inputs(inputs: Iterable[str], base_dir: Path | None = None) -> list[str]:
    """Sources named by `inputs`, in the order given, each once."""
    sources: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        for source in _resolve_one(str(item), Path(base_dir) if base_dir else Path.cwd(), set()):
            if source not in seen:
                seen.add(source)
                sources.append(source)
    return sources


def _resolve_one(item: str, base_dir: Path, list_files_open: set[Path]) -> list[str]:
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
                found.extend(_videos_under(Path(m)))
        if not found:
            raise InputError(
                f"input {item!r}: the glob pattern matches no video files "
                f"(extensions: {' '.join(sorted(VIDEO_EXTENSIONS))}); check the pattern"
            )
        return found
    if path.is_dir():
        found = _videos_under(path)
        if not found:
            raise InputError(
                f"input {item!r}: the directory {path} holds no video files "
                f"(searched recursively for {' '.join(sorted(VIDEO_EXTENSIONS))})"
            )
        return found
    if path.is_file():
        if path.suffix.lower() in LIST_EXTENSIONS:
            return _read_list_file(path, list_files_open)
        return [str(path)]
    raise InputError(
        f"input {item!r} does not exist ({path}); give a video file, a directory, a glob "
        f"pattern, a list file (.txt) or a URL"
    )


def _videos_under(directory: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(str(Path(root) / f) for f in files if not f.startswith(".") and is_video_name(f))
    return sorted(found)


def _read_list_file(path: Path, list_files_open: set[Path]) -> list[str]:
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
            found.extend(_resolve_one(line, path.parent, list_files_open))
        except InputError as e:
            raise InputError(f"{path}, line {number}: {e}") from None
    return found


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


def cache_path_for(url: str, cache_dir: Path) -> Path:
    name = Path(url.split("?", 1)[0].rstrip("/")).name or "source"
    return Path(cache_dir) / source_key(url) / name


def local_path(source: str, cache_dir: Path) -> Path:
    """Where a source can be decoded: itself if local, else its copy in `cache_dir` (fetched once).

    A local source that no longer exists, or a remote one that is not found, is a PermanentError
    (the run quarantines it); other fetch errors (a dropped connection) propagate, so the run
    retries the source next time.
    """
    if not is_remote(source):
        path = Path(source[len("file://") :] if source.startswith("file://") else source)
        if not path.is_file():
            raise PermanentError(f"input {source} no longer exists (it was there when the run started)")
        return path
    target = cache_path_for(source, cache_dir)
    if target.exists():
        return target
    import fsspec

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
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
