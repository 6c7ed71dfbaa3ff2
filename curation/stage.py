"""The stage contract, kept small.

A stage is plain Python: a function, or a callable class over a batch (a list of row dicts) that
loads its model once in `setup()`. It declares what it needs to run (`num_cpus`, `num_gpus`) as
class attributes; `workflows/` reads them when it maps the stage with Ray Data.

Failures come in two kinds. A `PermanentError` means the input itself is bad (a corrupt file, a clip
a model cannot read): it is quarantined with its message and never retried. Anything else is
transient (a full disk, a lost worker): the row is not written, so the next run retries it.
"""

from __future__ import annotations


class PermanentError(Exception):
    """The input cannot be processed, now or later: quarantine it with this message, don't retry.

    `stage` names where it failed in the quarantine table; None leaves it to the caller, which knows
    which step it was running. Subclasses set it for errors raised inside another stage's step."""

    stage: str | None = None


class Stage:
    """Base for stages that hold state (a model). Subclasses override `setup` and `__call__`."""

    name: str = "stage"
    num_cpus: float = 1
    num_gpus: float = 0

    def setup(self) -> None:
        """Load models; called once per worker before the first batch."""

    def __call__(self, batch: list[dict]) -> list[dict]:
        raise NotImplementedError
