"""The one progress display: a rich bar over items, with a note beside it, for every long loop a person waits for."""

from __future__ import annotations


class ProgressBar:
    """`with ProgressBar("sharding clips", total) as bar: bar.advance()`; nothing at all when disabled.

    A transient bar leaves the screen when done (the stage's summary line follows); curation's stays."""

    def __init__(self, label: str, total: int, enabled: bool = True, console=None, note: str = "",
                 transient: bool = True, eta: bool = False):
        self.label, self.total, self.enabled, self.console, self.first_note = label, total, enabled, console, note
        self.transient, self.eta = transient, eta

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       *([TextColumn("eta"), TimeRemainingColumn()] if self.eta else []),
                       TextColumn("{task.fields[note]}")]
            self.bar = Progress(*columns, console=self.console, transient=self.transient)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, note=self.first_note)
        return self

    def note(self, text: str) -> None:
        if self.enabled:
            self.bar.update(self.task, note=text)

    def restart(self, completed: int, total: int) -> None:
        """Count on from `completed` of `total` (a resumed run): the clock and the ETA start afresh here."""
        if self.enabled:
            self.bar.reset(self.task, total=total, completed=completed)

    def advance(self, note: str | None = None, count: int = 1) -> None:
        if self.enabled:
            self.bar.update(self.task, advance=count, **({"note": note} if note is not None else {}))

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
