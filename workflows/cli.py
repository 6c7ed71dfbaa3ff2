"""The `rushes` command line. Commands live in workflows/commands/*.py and are found here."""

from __future__ import annotations

import importlib
import os
import pkgutil

import typer

import workflows.commands

app = typer.Typer(
    name="rushes",
    help="Turn raw footage into training data for a text-to-video model, search it, and train on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """rushes: curate footage, recaption it, search it, and train a video diffusion transformer on it."""


def _register_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(workflows.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"workflows.commands.{mod.name}")
        module.register(app)


_register_commands()


def main() -> None:
    # gRPC (under pymilvus, Milvus Lite and Ray) logs its transport chatter to the terminal ("skipping fork()
    # handlers", keepalive "too_many_pings" notices). Real failures reach rushes as exceptions anyway.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    app()


if __name__ == "__main__":
    main()
