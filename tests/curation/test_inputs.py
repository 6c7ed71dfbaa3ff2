"""Inputs: files, directories, globs, list files and URLs resolved to an ordered, de-duplicated list."""

import functools
import http.server
import threading

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
