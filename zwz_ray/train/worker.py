"""The function every Ray Train worker runs: the distillation loop wired to Ray Train.

Data comes from ``ray.train.get_dataset_shard("train")``; metrics go to ``ray.train.report``
every step; checkpoints are written by every worker into its own temporary folder and reported
under one name, so Ray Train merges them into ``<storage_path>/<run_name>/checkpoint_<step>``.
A restarted worker group (``max_failures``) or a re-run with the same run name resumes from
``ray.train.get_checkpoint()``. ``served`` in the loop config holds the models the driver serves for the
run (GRPO's reward judge, see :func:`zwz_ray.train.run.served_judge`). Unusable data (:class:`~zwz_ray.preflight.DataError`) is not a crash:
the workers return it as the run's result, so Ray Train never retries it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from zwz_ray.config import from_dict
from zwz_ray.logs import get_logger
from zwz_ray.preflight import DataError
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.data import ShardRows
from zwz_ray.train.grpo import GRPORecipe
from zwz_ray.train.loop import DistillLoop, WorkerContext

log = get_logger(__name__)


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:06d}"


def ray_report(metrics: dict, save: Callable[[str], None] | None) -> None:
    """``ray.train.report`` on every worker; with ``save``, each worker adds its part of the checkpoint."""
    import ray.train

    if save is None:
        ray.train.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="zwz_ckpt_")
    try:
        save(tmp)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=checkpoint_name(metrics["step"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def worker_device() -> torch.device:
    import ray.train.torch

    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Setup, train, save and export; rank 0 returns the run summary to the driver."""
    import ray.train

    cfg = from_dict(DistillConfig, config["cfg"], source="<train_loop_config>")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    source = ShardRows(ray.train.get_dataset_shard("train"), cfg.data.shuffle_buffer, cfg.trainer.seed)
    checkpoint = ray.train.get_checkpoint()
    restore = checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)
    with restore as restore_dir:
        ctx = WorkerContext(rank, world, worker_device(), report=ray_report, restore_dir=restore_dir,
                            total_steps=config.get("total_steps"), tensorboard_dir=config.get("tensorboard_dir"),
                            served=config.get("served") or {})
        loop = (GRPORecipe if cfg.trainer.objective == "grpo" else DistillLoop)(cfg, ctx, source)
        loop.setup()
    try:
        loop.train()
        exported = loop.export()
    except DataError as exc:
        # Deterministic (e.g. every row dropped): raising would make Ray Train retry the same rows up to
        # max_failures times. All workers reach this together, return normally, and the driver raises it.
        log.error("distillation stopped: %s", exc)
        return {**loop.summary(), "error": str(exc)} if rank == 0 else None
    finally:
        loop.close()
    return {**loop.summary(), "export": exported} if rank == 0 else None
