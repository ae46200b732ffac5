"""Per-step training metrics: console lines, TensorBoard, and the history kept in checkpoints."""

from __future__ import annotations

import os
from typing import Any

from zwz_ray.logs import get_logger

log = get_logger("train")


def tensorboard_writer(logdir: str) -> Any:
    """A SummaryWriter from torch (needs ``tensorboard``) or ``tensorboardX``; None if neither is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log.info("TensorBoard is not installed; metrics go to the console, metrics.jsonl and Ray Train only")
            return None
    os.makedirs(logdir, exist_ok=True)
    return SummaryWriter(logdir)


class MetricsLog:
    """Collects one record per optimizer step; rank 0 also prints and writes TensorBoard events."""

    def __init__(self, history: list[dict] | None, log_every: int, total_steps: int | None,
                 tensorboard_dir: str | None, is_main: bool):
        self.history = list(history or [])
        self.log_every, self.total_steps, self.is_main = log_every, total_steps, is_main
        self.writer = tensorboard_writer(tensorboard_dir) if (is_main and tensorboard_dir) else None

    def add(self, record: dict) -> None:
        self.history.append(record)
        if not self.is_main:
            return
        step = record["step"]
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)
        if step % self.log_every == 0 or step == self.total_steps:
            log.info(format_line(record, self.total_steps))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_line(r: dict, total: int | None) -> str:
    of = f"/{total}" if total else ""
    line = (f"step {r['step']}{of} epoch {r['epoch']} loss {r['loss']:.4f} lr {r['lr']:.2e} "
            f"grad_norm {r['grad_norm']:.3f} {r['samples_per_s']:.2f} samples/s {r['tokens_per_s']:.0f} tok/s")
    if "reward_mean" in r:  # GRPO
        line += f" reward {r['reward_mean']:.3f} acc {r['accuracy']:.3f} len {r['response_len_mean']:.0f}"
    if r.get("dropped"):
        line += f" dropped {r['dropped']}"
    return line
