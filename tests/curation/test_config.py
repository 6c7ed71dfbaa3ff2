"""Loading a config (the kernel's `load_yaml`): a file that is not a sane config is a ConfigError
naming it, quickly, never a traceback or a hang."""

import pytest

from curation.config import CurateConfig
from curation.core.config import ConfigError, load_yaml

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


# Each file here once hung the loader for good; the per-test timeout turns a hang into a failure
# (a bound far above any machine's time, not a speed check).
pytestmark = pytest.mark.timeout(120)


def _error(path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_yaml(path, CurateConfig)
    return str(raised.value)


def test_an_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    message = _error(path)
    assert str(path) in message and "aliases" in message and len(message) < 500


def test_a_few_aliases_are_fine_and_huge_values_are_cut_short_in_messages(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("shots: &s {min_shot_frames: 12}\nfilters: {min_duration: 2}\n")
    assert load_yaml(path, CurateConfig).filters.min_duration == 2  # an anchor is fine
    big = tmp_path / "big.yaml"
    big.write_text("".join(f"key_{i}: {'x' * 200}\n" for i in range(20_000)))  # 4 MB of unknown keys
    message = _error(big)
    assert "unknown key 'key_0'" in message and "more" in message and len(message) < 10_000


def test_non_utf8_a_directory_and_a_huge_file_are_clear_errors(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("filters:\n  min_duration: 2 # d\xe9but\n".encode("latin-1"))
    assert "not UTF-8" in _error(latin) and str(latin) in _error(latin)
    assert "is a directory" in _error(tmp_path)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# " + b"x" * (11 << 20) + b"\n")
    assert "MB" in _error(huge)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert str(deep) in _error(deep)
