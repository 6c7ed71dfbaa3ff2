"""`rushes run CONFIG.yaml`: a whole run described in one YAML file, stage after stage.

Each stage has a section in `WorkflowConfig` (absent = skipped) and a runner named in `STEPS`. A
runner is `run(wf: WorkflowConfig, section) -> None`; it is imported only when its section is
present, so a workflow that only curates never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import Field

from curation.config import CurateConfig, StrictModel


class RayConfig(StrictModel):
    address: str | None = Field(None, description="Ray cluster address; null starts local Ray (or uses RAY_ADDRESS)")
    workers: int | None = Field(None, ge=1, description="parallel workers; null uses every CPU Ray has")


class WorkflowConfig(StrictModel):
    out: Path = Field(description="run directory (see README: The run directory)")
    inputs: list[str] = Field(default_factory=list, description="files, directories, globs, list files or URLs")
    ray: RayConfig = Field(default_factory=RayConfig)
    curate: CurateConfig | None = None


# Order matters: each stage reads what the ones before it wrote.
STEPS: list[tuple[str, str]] = [
    ("curate", "workflows.curate:run_step"),
]


def run_workflow(wf: WorkflowConfig) -> None:
    for name, target in STEPS:
        section = getattr(wf, name, None)
        if section is None or getattr(section, "enabled", True) is False:
            continue
        module_name, func_name = target.split(":")
        getattr(importlib.import_module(module_name), func_name)(wf, section)
