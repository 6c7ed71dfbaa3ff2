"""`rushes doctor`: what this machine has that rushes uses, so a missing piece shows before a run."""

from __future__ import annotations

import importlib.metadata
import shutil

import typer

from workflows.commands import examples


def doctor() -> None:
    """Show versions of rushes' dependencies and whether the system tools it uses are installed."""
    packages = ["rushes", "ray", "torch", "av", "opencv-python", "scenedetect", "transformers",
                "open-clip-torch", "pymilvus", "milvus-lite", "pyarrow"]
    for name in packages:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "MISSING (run `make install`)"
        typer.echo(f"{name:24s} {version}")
    for tool, why in [("tesseract", "burnt-in text detection"), ("ffmpeg", "command-line clip tools"),
                      ("chromium", "search page browser test")]:
        where = shutil.which(tool)
        typer.echo(f"{tool:24s} {where or 'MISSING'}  ({why})")


def register(app: typer.Typer) -> None:
    app.command(epilog=examples('rushes doctor'))(doctor)
