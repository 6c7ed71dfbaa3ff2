"""`rushes milvus start|stop|status`: the run's shared Milvus Lite server (indexing/server.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from workflows.commands import examples

ACTIONS = ("start", "stop", "status")


def milvus(
    action: Annotated[str, typer.Argument(help="start, stop or status")],
    out: Annotated[Path, typer.Option("--out", help="run directory (its OUT/milvus.db)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the server's state as JSON")] = False,
) -> None:
    """Start, stop or show the run's shared Milvus Lite server, so `rushes serve`, `index`, `dedup` and
    `search` can use OUT/milvus.db at the same time (each finds the server by itself)."""
    from indexing import server as managed
    from indexing.store import default_uri

    if action not in ACTIONS:
        typer.echo(f"error: unknown action {action!r}; use one of {', '.join(ACTIONS)}", err=True)
        raise typer.Exit(2)
    if not out.is_dir():
        typer.echo(f"error: --out {out} is not a directory: give a run directory written by `rushes curate`", err=True)
        raise typer.Exit(2)
    db = default_uri(out)
    try:
        if action == "start":
            state, started = managed.start(db)
            message = (f"{'started' if started else 'already running'}: Milvus Lite server for {db} on {state.uri} "
                       f"(pid {state.pid}); stop it with `rushes milvus stop --out {out}`")
        elif action == "stop":
            state = managed.stop(db)
            message = f"stopped the Milvus Lite server for {db} (pid {state.pid})" if state else f"no server running for {db}"
        else:
            state = managed.running(db)
            if state is None:
                holder = managed.lock_holder(db) if Path(db).exists() else None
                message = (f"no server running for {db}" if holder is None
                           else f"no server running for {db}; {managed.locked_message(db, holder)}")
            else:
                owner = f", stops with process {state.owner_pid}" if state.owner_pid else ""
                message = f"running: Milvus Lite server for {db} on {state.uri} (pid {state.pid}{owner})"
    except managed.ServerError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"action": action, "db": db, "running": action != "stop" and state is not None,
                               "pid": state.pid if state else None, "uri": state.uri if state else None}))
    else:
        typer.echo(message)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples("rushes milvus start --out demo-out", "rushes milvus status --out demo-out --json"))(milvus)
