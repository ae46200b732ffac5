"""Distillation on Ray Train: SFT of a Qwen-VL student on R2I rows, with FSDP2, LoRA and exact resume.

    from zwz_ray.train import DistillConfig, run_distill
    result = run_distill(cfg)                 # rows from cfg.data.path (parquet)
    result = run_distill(cfg, dataset=ds)     # or a Ray Dataset, e.g. straight from synthesis
"""

from zwz_ray.train.config import DistillConfig
from zwz_ray.train.objectives import LossTerms, Objective, SFTObjective
from zwz_ray.train.run import DistillResult, run_distill

__all__ = ["DistillConfig", "DistillResult", "LossTerms", "Objective", "SFTObjective", "run_distill"]
