"""Distillation on Ray Train: SFT of a Qwen-VL student on R2I rows, with FSDP2, LoRA and exact resume.

    from zwz_ray.train import DistillConfig, run_distill
    result = run_distill(cfg)                 # rows from cfg.data.path (parquet)
    result = run_distill(cfg, dataset=ds)     # or a Ray Dataset, e.g. straight from synthesis

Like every job package, this facade is light to import: the config classes, the ``run_*`` entry and
its result type. torch, FSDP, transformers and Ray Train are imported when the job runs.
"""

from zwz_ray.train.config import DistillConfig
from zwz_ray.train.run import DistillResult, run_distill

__all__ = ["DistillConfig", "DistillResult", "run_distill"]
