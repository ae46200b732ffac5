"""AdamW and the learning-rate schedule (linear warmup, then constant or cosine)."""

from __future__ import annotations

import math

import torch

from zwz_ray.train.config import OptimConfig


def make_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig, device: torch.device,
                   offload: bool = False) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (fused kernels when they live on CUDA)."""
    if not params:
        raise ValueError("no trainable parameters: check lora.* and trainer.freeze_vision")
    fused = device.type == "cuda" and not offload
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay, fused=fused)


def lr_factor(step: int, cfg: OptimConfig, total_steps: int | None) -> float:
    """Multiplier of ``cfg.lr`` for optimizer step ``step`` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if not total_steps:
        raise ValueError("a cosine schedule needs the total number of steps (set trainer.max_steps)")
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int | None) -> torch.optim.lr_scheduler.LambdaLR:
    if cfg.schedule == "cosine" and not total_steps:
        raise ValueError("optim.schedule 'cosine' needs the total number of steps (set trainer.max_steps)")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, total_steps))
