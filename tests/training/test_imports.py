"""training/ runs on a GPU box with only torch, numpy and pyarrow: importing it must not pull in more."""

import subprocess
import sys
from pathlib import Path

import training.vae

BANNED = ("ray", "pymilvus", "decord", "open_clip", "transformers", "cv2", "av", "typer", "pydantic")
# the kernel modules training/ may import at module level: both need only the standard library and pyarrow
ALLOWED_KERNEL = ("curation.core", "curation.core.schema", "curation.core.models")


def test_training_modules_import_only_torch_numpy_pyarrow():
    package_dir = Path(training.vae.__file__).parent
    modules = sorted(f"training.{p.stem}" for p in package_dir.glob("*.py") if p.stem != "__init__")
    assert {"training.vae", "training.dit", "training.flow", "training.data", "training.train", "training.sample"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in {BANNED!r} if m in sys.modules)\n"
        f"curation = sorted(m for m in sys.modules if m.startswith('curation.') and m not in {ALLOWED_KERNEL!r})\n"
        "assert not bad and not curation, (bad, curation)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=package_dir.parent)
