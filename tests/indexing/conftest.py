"""Fixtures of the indexing tests (the helpers live in indexing_testkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from indexing_testkit import build_run


@pytest.fixture(scope="session")
def run_template(tmp_path_factory) -> Path:
    """Built once; tests copy it (copying is much cheaper than encoding)."""
    out = tmp_path_factory.mktemp("template") / "run"
    build_run(out)
    return out
