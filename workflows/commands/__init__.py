"""One module per group of `rushes` commands. Each defines `register(app)`; cli.py finds them all.

Modules import only typer and the standard library at top level, so `rushes --help` stays instant;
heavy imports go inside the command functions.
"""


def examples(*lines: str) -> str:
    """The epilog every command's --help ends with: one or two real invocations."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)
