"""Distil synthesised R2I rows into a student VLM on Ray Train (SFT; FSDP2; LoRA optional).

    python -m pipelines.distill --config configs/distill/laptop.yaml [--set trainer.max_steps=5 ...]

Re-running with the same checkpoint.storage_path and checkpoint.run_name resumes the run.
"""

from __future__ import annotations

import os
import sys

from zwz_ray.train.config import DistillConfig

CONFIG_CLASS = DistillConfig
DEFAULT_CONFIG = "configs/distill/laptop.yaml"


def main(argv: list[str] | None = None) -> int:
    from zwz_ray.config import config_from_cli
    from zwz_ray.train.run import run_distill

    cfg = config_from_cli(DistillConfig, argv, description=__doc__.splitlines()[0], default_config=DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None)
    result = run_distill(cfg)
    print(f"steps: {result.steps}  final loss: {result.final_loss}  dropped: {result.dropped}")
    print(f"checkpoint: {result.checkpoint_path}")
    print(f"model: {result.export_dir or '-'}  adapter: {result.adapter_dir or '-'}")
    print(f"summary: {result.summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
