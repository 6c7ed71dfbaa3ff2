"""Inputs: files, directories, globs, list files and URLs resolved to an ordered, de-duplicated list."""

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

from curation.core.stage import PermanentError
from curation.inputs import InputError, cache_path_for, local_path, resolve_inputs, source_key


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "deep").mkdir()
    (tmp_path / "a" / ".hidden").mkdir()
    for name in [
        "a/one.mp4",
        "a/two.AVI",
        "a/deep/three.mkv",
        "a/notes.md",
        "a/.half.mp4.tmp",
        "a/.hidden/x.mp4",
        "b.mov",
        "odd_name.bin",
    ]:
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_directories_are_searched_recursively_for_videos(tree):
    got = resolve_inputs(["a"], base_dir=tree)
    assert got == [str(tree / "a/deep/three.mkv"), str(tree / "a/one.mp4"), str(tree / "a/two.AVI")]


def test_order_is_kept_and_duplicates_dropped(tree):
    got = resolve_inputs(
        ["b.mov", "a/one.mp4", str(tree / "b.mov"), "a", f"file://{tree}/b.mov"], base_dir=tree
    )
    assert got == [
        str(tree / "b.mov"),
        str(tree / "a/one.mp4"),
        str(tree / "a/deep/three.mkv"),
        str(tree / "a/two.AVI"),
    ]


def test_globs_and_explicit_files_of_any_extension(tree):
    assert resolve_inputs(["a/**/*.mkv"], base_dir=tree) == [str(tree / "a/deep/three.mkv")]
    # a file named explicitly is a source whatever its extension: probe decides whether it is video
    assert resolve_inputs(["odd_name.bin"], base_dir=tree) == [str(tree / "odd_name.bin")]


def test_list_file_with_comments_relative_paths_and_nesting(tree):
    (tree / "more.txt").write_text("# nested list\nb.mov\n")
    (tree / "inputs.txt").write_text("# my footage\n\na/one.mp4\n  more.txt  \nhttp://127.0.0.1:1/x.mp4\n")
    got = resolve_inputs([str(tree / "inputs.txt")], base_dir=tree / "a")
    assert got == [str(tree / "a/one.mp4"), str(tree / "b.mov"), "http://127.0.0.1:1/x.mp4"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("nope.mp4", "'nope.mp4' does not exist"),
        ("a/*.webm", "glob pattern matches no video"),
        ("empty", "holds no video files"),
    ],
)
def test_inputs_that_name_nothing_are_clear_errors(tree, bad, message):
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match=message):
        resolve_inputs(["b.mov", bad], base_dir=tree)


def test_list_file_errors_name_the_line(tree):
    (tree / "list.txt").write_text("b.mov\nmissing.mp4\n")
    with pytest.raises(InputError, match=r"list.txt, line 2: input 'missing.mp4' does not exist"):
        resolve_inputs(["list.txt"], base_dir=tree)
    (tree / "loop.txt").write_text("loop.txt\n")
    with pytest.raises(InputError, match="includes itself"):
        resolve_inputs(["loop.txt"], base_dir=tree)


def test_a_source_deleted_mid_run_is_a_permanent_error(tree):
    source = resolve_inputs(["b.mov"], base_dir=tree)[0]
    assert local_path(source, tree / "cache") == tree / "b.mov"
    (tree / "b.mov").unlink()
    with pytest.raises(PermanentError, match="no longer exists"):
        local_path(source, tree / "cache")


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_http_sources_are_fetched_once_into_the_cache(http_root, tmp_path):
    root, url = http_root
    payload = bytes(range(256)) * 5000
    (root / "clip.mp4").write_bytes(payload)
    source = resolve_inputs([f"{url}/clip.mp4"])[0]
    assert source == f"{url}/clip.mp4"
    cache = tmp_path / "cache"
    got = local_path(source, cache)
    assert got == cache_path_for(source, cache) and got.read_bytes() == payload
    assert got.parent.name == source_key(source)
    assert [p.name for p in got.parent.iterdir()] == ["clip.mp4"]  # no temp file left behind
    (root / "clip.mp4").unlink()  # the cached copy is used from now on
    assert local_path(source, cache).read_bytes() == payload


def test_http_source_not_found_is_permanent(http_root, tmp_path):
    _, url = http_root
    with pytest.raises(PermanentError, match="not found"):
        local_path(f"{url}/missing.mp4", tmp_path / "cache")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_fsspec_urls_are_listed_and_fetched(tmp_path):
    # fsspec's in-memory filesystem stands in for s3:// here: the same listing and fetching code runs
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("bucket/day1/a.mp4", "bucket/day1/notes.txt", "bucket/day2/b.mov"):
        fs.pipe(f"/{name}", name.encode())
    assert resolve_inputs(["memory://bucket/"]) == ["memory:///bucket/day1/a.mp4", "memory:///bucket/day2/b.mov"]
    assert resolve_inputs(["memory://bucket/*/*.mov"]) == ["memory:///bucket/day2/b.mov"]
    assert local_path("memory:///bucket/day2/b.mov", tmp_path).read_bytes() == b"bucket/day2/b.mov"
    with pytest.raises(InputError, match="matches no video files"):
        resolve_inputs(["memory://bucket/day1/*.mkv"])
    with pytest.raises(PermanentError, match="not found"):
        local_path("memory:///bucket/gone.mp4", tmp_path)


# ---------------------------------------------------------------------------------------------
# Paths that cannot be read never stop a run: they are skipped, each with its reason


def test_loops_dangling_links_and_unreadable_paths_are_skipped_with_a_reason(tree, monkeypatch):
    from curation.inputs import find_inputs

    folder = tree / "a"
    (folder / "self.mp4").symlink_to("self.mp4")
    (folder / "gone.mp4").symlink_to("nowhere.mp4")
    (folder / "here").symlink_to(".")
    (folder / "locked").mkdir()
    (folder / "locked" / "in.mp4").write_bytes(b"x")
    (folder / "secret.mp4").write_bytes(b"x")
    real_access = os.access  # the tests run as root, who may read anything: play a user who may not
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).endswith("secret.mp4") and real_access(p, mode))
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = find_inputs(["a", "a/self.mp4"], base_dir=tree)
    assert found.sources == [str(folder / "deep/three.mkv"), str(folder / "one.mp4"), str(folder / "two.AVI")]
    reasons = {Path(s.path).name: s.reason for s in found.skipped}
    assert set(reasons) == {"self.mp4", "gone.mp4", "here", "locked", "secret.mp4"}
    assert "symlink loop" in reasons["self.mp4"] and str(folder / "self.mp4") in reasons["self.mp4"]
    assert "dangling symlink" in reasons["gone.mp4"] and "nowhere.mp4" in reasons["gone.mp4"]
    assert "a loop" in reasons["here"]
    assert "cannot be listed" in reasons["locked"] and "chmod" in reasons["locked"]
    assert "no read permission" in reasons["secret.mp4"] and "re-export" not in reasons["secret.mp4"]


def test_a_folder_with_only_unreadable_videos_is_not_an_error(tree):
    from curation.inputs import find_inputs

    (tree / "links").mkdir()
    (tree / "links" / "loop.mp4").symlink_to("loop.mp4")
    found = find_inputs(["links"], base_dir=tree)
    assert found.sources == [] and [Path(s.path).name for s in found.skipped] == ["loop.mp4"]


def test_byte_identical_inputs_are_found_by_content(tmp_path):
    from curation.inputs import find_duplicates

    data = bytes(range(256)) * 4000  # ~1 MB: the fingerprint samples it, the comparison reads it all
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(data)
    near = bytearray(data)
    near[300_000] ^= 1  # same size, same sampled chunks, one byte off: not a copy
    (tmp_path / "near.mp4").write_bytes(bytes(near))
    (tmp_path / "other.mp4").write_bytes(data[:-1])
    sources = [str(tmp_path / n) for n in ("b.mp4", "a.mp4", "near.mp4", "c.mp4", "other.mp4")]
    assert find_duplicates(sources) == {sources[1]: sources[0], sources[3]: sources[0]}
    # a source an earlier run curated stays the original, and is never made a copy of another
    assert find_duplicates(sources, is_done=lambda s: s in (sources[1], sources[3])) == {sources[0]: sources[1]}


def test_a_copy_of_a_source_an_earlier_run_recorded_is_a_duplicate(tmp_path):
    """Compared with the sources the run already holds too: by fingerprint, then bytes while the
    first is still readable, by fingerprint alone when it is not."""
    from curation.inputs import find_duplicates
    from curation.probe import fingerprint

    data = bytes(range(256)) * 4000
    (tmp_path / "a.mp4").write_bytes(data)
    (tmp_path / "b_copy.mp4").write_bytes(data)
    near = bytearray(data)
    near[300_000] ^= 1  # same fingerprint, one byte off
    (tmp_path / "near.mp4").write_bytes(bytes(near))
    a, b, n = (str(tmp_path / x) for x in ("a.mp4", "b_copy.mp4", "near.mp4"))
    recorded = {fingerprint(a): a}
    copies = find_duplicates([b], recorded=recorded)
    assert copies == {b: a} and not copies.unverified
    assert find_duplicates([n], recorded=recorded) == {}
    assert find_duplicates([a, b], recorded=recorded) == {b: a}  # a is an input itself: compared as before
    assert find_duplicates([b], is_done=lambda s: s == b, recorded=recorded) == {}  # b's own rows stay
    (tmp_path / "a.mp4").unlink()
    copies = find_duplicates([b], recorded=recorded)
    assert copies == {b: a} and copies.unverified == {b}
