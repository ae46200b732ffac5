"""Distil synthesised R2I rows into a student VLM on Ray Train (SFT; FSDP2; LoRA optional).

    python -m pipelines.distill [--config configs/distill/laptop.yaml] [--set trainer.max_steps=5 ...]

Re-running with the same checkpoint.storage_path and checkpoint.run_name resumes the run.
"""

from __future__ import annotations

import sys

from zwz_ray.cli import Job
from zwz_ray.train import DistillConfig, DistillResult, run_distill

CONFIG_CLASS = DistillConfig


def summary(result: DistillResult) -> list[str]:
    return [f"steps: {result.steps}  final loss: {result.final_loss}  dropped: {result.dropped}",
            f"checkpoint: {result.checkpoint_path}",
            f"model: {result.export_dir or '-'}  adapter: {result.adapter_dir or '-'}",
            f"summary: {result.summary_path}"]


JOB = Job("distill", DistillConfig, "distill", run_distill, summary)


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
