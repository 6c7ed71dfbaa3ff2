"""`rushes run CONFIG.yaml`: a whole run described in one YAML file, stage after stage.

Each stage has a section in `WorkflowConfig` (absent = skipped) and a runner named in `STEPS`. A
runner is `run(wf: WorkflowConfig, section) -> None`; it is imported only when its section is
present, so a workflow that only curates never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import Field

from curation.config import CurateConfig
from curation.core.config import StrictModel
from indexing.config import DedupConfig, IndexConfig
from recaption.config import CaptionConfig
from workflows.train_steps import ShardStepConfig, TrainStepConfig


class RayConfig(StrictModel):
    address: str | None = Field(None, description="Ray cluster address; null starts local Ray (or uses RAY_ADDRESS)")
    workers: int | None = Field(None, ge=1, description="parallel workers; null uses every CPU Ray has")


class GenerateConfig(StrictModel):
    """Procedural footage written before curation (tests, the demo): reels of shapes with known truth."""

    out_dir: Path = Field(description="where the reels go; add this directory to `inputs` to curate them")
    reels: int = Field(3, ge=1, le=1000)
    seconds: float = Field(20.0, gt=0, description="length of each reel")
    width: int = Field(320, ge=16, multiple_of=2)
    height: int = Field(240, ge=16, multiple_of=2)
    fps: float = Field(24.0, gt=0)
    seed: int = Field(0, description="same seed, same footage")


class WorkflowConfig(StrictModel):
    out: Path = Field(description="run directory (see README: The run directory)")
    inputs: list[str] = Field(default_factory=list, description="files, directories, globs, list files or URLs")
    ray: RayConfig = Field(default_factory=RayConfig)
    generate: GenerateConfig | None = None
    curate: CurateConfig | None = None
    dedup: DedupConfig | None = None
    caption: CaptionConfig | None = None
    index: IndexConfig | None = None
    shard: ShardStepConfig | None = None
    train: TrainStepConfig | None = None


# Order matters: each stage reads what the ones before it wrote.
STEPS: list[tuple[str, str]] = [
    ("generate", "workflows.generate:run_generate_step"),
    ("curate", "workflows.curate:run_step"),
    ("dedup", "workflows.index:run_dedup_step"),  # before captioning: duplicates are never captioned
    ("caption", "workflows.caption:run_step"),
    ("index", "workflows.index:run_index_step"),
    ("shard", "workflows.train_steps:run_shard_step"),
    ("train", "workflows.train_steps:run_train_step"),
]


def run_workflow(wf: WorkflowConfig) -> None:
    for name, target in STEPS:
        section = getattr(wf, name, None)
        if section is None or getattr(section, "enabled", True) is False:
            continue
        module_name, func_name = target.split(":")
        getattr(importlib.import_module(module_name), func_name)(wf, section)
    # Later stages add tables the curation report did not see yet: render it once more at the end.
    from curation.core.rundir import RunDir
    from workflows.report import write_report

    if RunDir(wf.out).manifest.exists():
        print(f"report: {write_report(RunDir(wf.out), wf.curate)}")
