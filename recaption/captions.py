"""One row of OUT/captions/, and how its captioner is named: what every captioner writes."""

from __future__ import annotations

from curation.core.rundir import now_utc
from curation.core.schema import CAP
from recaption.prompts import hints_json

UNCHECKED_TAG = " [unchecked]"  # in a captioner's name: its captions skipped the checks
# error prefix of a caption that this captioner will never get right, so is not retried: an unreadable
# clip, an imported caption that fails its checks, a caption failed by the measurement checks
PERMANENT = "permanent: "


def captioner_name(identity: str, checked: bool = True) -> str:
    """The captioner column's value: the model's identity, tagged when its captions were not checked."""
    return identity if checked else f"{identity}{UNCHECKED_TAG}"


def caption_row(clip_id: str, dense: str | None, short: str | None, captioner: str, prompt_version: str,
                hints: dict, error: str | None, checked: bool = True) -> dict:
    """One row of OUT/captions/. A failed caption keeps its error and no text."""
    return {
        CAP.clip_id: clip_id,
        CAP.caption_dense: dense,
        CAP.caption_short: short,
        CAP.captioner: captioner_name(captioner, checked),
        CAP.prompt_version: prompt_version,
        CAP.hints: hints_json(hints),
        CAP.created_at: now_utc(),
        CAP.error: error,
        CAP.signal_checks: None,  # filled by the caption stage (recaption/agreement.py)
    }
