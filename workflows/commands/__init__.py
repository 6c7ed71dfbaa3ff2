"""One module per group of `rushes` commands. Each defines `register(app)`; cli.py finds them all.

Modules import only typer and the standard library at top level, so `rushes --help` stays instant;
heavy imports go inside the command functions.
"""
