"""The foundation: schema, run directory I/O, config validation, and the CLI's entry point."""

import subprocess
import sys

import pyarrow as pa
import pytest

from curation.config import CurateConfig
from curation.core import schema
from curation.core.config import ConfigError, load_yaml, validate
from curation.core.rundir import RunDir, atomic_write_table, config_hash, read_table, rows_to_table


def test_clip_id_is_stable_and_distinguishes_boundaries():
    a = schema.clip_id_for("abc", 0, 10)
    assert a == schema.clip_id_for("abc", 0, 10)
    assert a != schema.clip_id_for("abc", 0, 11)
    assert a != schema.clip_id_for("abd", 0, 10)


def test_rows_round_trip_through_an_atomic_part(tmp_path):
    run = RunDir(tmp_path)
    rows = [{schema.M.clip_id: "x", schema.M.source: "a.mp4", schema.M.filter_reasons: ["too_dark"]}]
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest / "part-a.parquet")
    # a leftover temp file from a killed writer is never read
    (run.manifest / ".part-b.parquet.123.tmp").write_bytes(b"garbage")
    table = read_table(run.manifest, schema.MANIFEST)
    assert table.num_rows == 1
    assert table.column(schema.M.filter_reasons).to_pylist() == [["too_dark"]]
    assert table.schema == schema.MANIFEST


def test_unknown_column_is_refused():
    with pytest.raises(KeyError, match="not_a_column"):
        rows_to_table([{"not_a_column": 1}], schema.MANIFEST)


def test_empty_table_has_the_schema(tmp_path):
    assert read_table(tmp_path / "missing", schema.CAPTIONS).schema == pa.schema(schema.CAPTIONS)


def test_config_errors_name_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'filters.min_duraton'"):
        validate({"filters": {"min_duraton": 2}}, CurateConfig)
    with pytest.raises(ConfigError, match=r"filters.min_luminance.*'bright'"):
        validate({"filters": {"min_luminance": "bright"}}, CurateConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(bad, CurateConfig)


def test_config_hash_changes_with_settings():
    assert config_hash(CurateConfig()) == config_hash(CurateConfig())
    assert config_hash(CurateConfig()) != config_hash(validate({"filters": {"min_duration": 3}}, CurateConfig))


def test_cli_help_is_fast_and_light():
    # `rushes --help` must not import torch, ray, cv2 or transformers
    code = (
        "import sys; from typer.testing import CliRunner; from workflows.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "heavy = [m for m in ('torch', 'ray', 'cv2', 'transformers', 'open_clip', 'pymilvus') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_command_help_ends_with_real_examples():
    """Each example names its own command and only options that command has."""
    import re

    from typer.testing import CliRunner

    from workflows.cli import app

    commands = sorted(c.name for c in __import__("typer").main.get_command(app).commands.values())
    assert {"curate", "caption", "train-captioner", "search", "serve", "sample"} <= set(commands)
    for name in commands:
        result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, (name, result.output)
        help_text, _, examples = result.output.partition("Examples:")
        lines = [line.strip() for line in examples.splitlines() if line.strip().startswith("rushes ")]
        assert lines, f"`rushes {name} --help` ends with no example"
        for line in lines:
            assert line.split()[1] == name, line
            for option in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", line):
                assert option in help_text, (name, option)
