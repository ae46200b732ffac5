"""The distillation loop on one worker: setup / train / save / load / export.

It runs the same with or without Ray: :mod:`zwz_ray.train.worker` wires in Ray Train (dataset
shard, ``report``, checkpoints in RunConfig storage); benchmarks call it in-process. All workers
run it in lockstep; every collective (FSDP2, the per-step all-reduces, checkpoints) is reached
by all of them, and an epoch ends for everyone as soon as one worker runs out of rows.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from zwz_ray.config import to_dict
from zwz_ray.logs import get_logger
from zwz_ray.preflight import DataError
from zwz_ray.train import parallel
from zwz_ray.train.checkpoint import load_checkpoint, save_checkpoint
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.data import RowSource, StepBatches
from zwz_ray.train.examples import DROP_REASONS
from zwz_ray.train.export import export_student
from zwz_ray.train.loading import load_student
from zwz_ray.train.metrics import MetricsLog
from zwz_ray.train.objectives import make_objective
from zwz_ray.train.optim import make_optimizer, make_scheduler

log = get_logger(__name__)


@dataclass
class WorkerContext:
    """What the loop needs from its runtime (Ray Train or a plain process group)."""

    rank: int
    world_size: int
    device: torch.device
    # report(metrics, save) is called once per step on every worker; ``save`` is a callable that
    # writes a checkpoint into the directory it is given, or None on steps without a checkpoint.
    report: Callable[[dict, Callable[[str], None] | None], None] = lambda metrics, save: None
    restore_dir: str | None = None
    total_steps: int | None = None
    tensorboard_dir: str | None = None
    # model key -> DeploymentRef of the models the driver serves for this run (GRPO's reward judge)
    served: dict = field(default_factory=dict)


class DistillLoop:
    def __init__(self, cfg: DistillConfig, ctx: WorkerContext, source: RowSource):
        self.cfg, self.ctx, self.source = cfg, ctx, source
        self.step, self.epoch, self.skip_rows = 0, 0, 0
        self.resumed_from: int | None = None
        self.last_saved = -1
        self.global_drops = [0] * len(DROP_REASONS)

    # ------------------------------------------------------------------ setup / load

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.trainer.seed)  # identical initial weights (LoRA init) on every worker
        student = load_student(cfg.student, cfg.trainer, cfg.lora, ctx.device,
                               min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
        self.model, processor, self.load_stats = student.model, student.processor, student.stats
        processor.tokenizer.padding_side = "right"
        self.params = parallel.trainable_parameters(self.model)
        self.optimizer = make_optimizer(self.params, cfg.optim, ctx.device, cfg.trainer.fsdp_offload)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim, ctx.total_steps)
        self.objective = make_objective(cfg.trainer.objective, processor, cfg.data)
        self.batches = StepBatches(self.source, self.objective.encode, self.objective.collate,
                                   cfg.trainer.micro_batch_size, cfg.trainer.grad_accum_steps)
        history = self._restore() if ctx.restore_dir else []
        seed = cfg.trainer.seed + 1000 * ctx.rank  # dropout differs across workers, reproducibly
        if self.resumed_from is None:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        self.metrics = MetricsLog(history, cfg.trainer.log_every, ctx.total_steps, ctx.tensorboard_dir, ctx.rank == 0)

    def _restore(self) -> list[dict]:
        state, rank_state = load_checkpoint(self.ctx.restore_dir, self.model, self.optimizer, self.scheduler, self.ctx.rank)
        self.step = self.last_saved = self.resumed_from = state["step"]
        self.epoch = state["epoch"]
        self.global_drops = state.get("global_drops", self.global_drops)
        if self.ctx.rank == 0:
            warn_on_changes(state, self.cfg, self.ctx.world_size)
        if rank_state is not None:
            self.batches.drops.update(rank_state["drops"])
            self.skip_rows = rank_state["rows_consumed"] if rank_state["epoch"] == self.epoch else 0
        if self.ctx.rank == 0:
            log.info("resumed from step %d (epoch %d) in %s", self.step, self.epoch, self.ctx.restore_dir)
        return state["history"]

    # ------------------------------------------------------------------ train

    def train(self) -> None:
        t = self.cfg.trainer
        while self.epoch < t.epochs and not self._done():
            self.batches.start_epoch(self.epoch, self.skip_rows)
            self.skip_rows = 0
            ended = False
            while not self._done():
                micro_batches = self.batches.next_step()
                if not self._all_ready(micro_batches is not None):
                    ended = True
                    break
                record = self._optimizer_step(micro_batches)
                self._after_step(record)
            if self.step == 0:
                raise DataError(self._no_step_message())  # every worker sees it at once (the check is collective)
            if ended:
                self.epoch += 1
        if self.last_saved != self.step:
            self.ctx.report(self.metrics.history[-1] if self.metrics.history else {"step": self.step}, self.save)
            self.last_saved = self.step

    def _done(self) -> bool:
        return self.cfg.trainer.max_steps is not None and self.step >= self.cfg.trainer.max_steps

    def _all_ready(self, ready: bool) -> bool:
        """All workers agree whether every one of them has a full step; drop counts ride along."""
        ready_count, *drops = self._sum([int(ready), *self.batches.drop_vector()])
        self.global_drops = [int(x) for x in drops]
        return int(ready_count) == self.ctx.world_size

    def _sum(self, values: list[float]) -> list[float]:
        """All-reduce (sum) a few numbers across workers (on the device: NCCL has no CPU tensors)."""
        vec = torch.tensor(values, dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(vec)
        return vec.tolist()

    def _optimizer_step(self, micro_batches: list[dict]) -> dict:
        start = time.perf_counter()
        micro_batches = self.objective.prepare_step(self.model, micro_batches)
        keys = ("num_targets", "num_samples", "num_tokens")
        targets, samples, tokens = self._sum([sum(b[k] for b in micro_batches) for k in keys])
        scale = self.ctx.world_size / max(targets, 1.0)  # FSDP averages gradients over workers
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        lr = self.scheduler.get_last_lr()[0]
        for batch in micro_batches:
            terms = self.objective.loss(self.model, to_device(batch, self.ctx.device))
            (terms.loss_sum * scale).backward()
            loss_sum += terms.loss_sum.detach().double()
        grad_norm = parallel.clip_grad_norm(self.params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        (loss,) = self._sum([float(loss_sum)])
        elapsed = time.perf_counter() - start
        self.step += 1
        record = {"step": self.step, "epoch": self.epoch, "loss": loss / max(targets, 1.0), "lr": lr,
                  "grad_norm": float(grad_norm), "samples": int(samples), "tokens": int(tokens), "targets": int(targets),
                  "step_time_s": elapsed, "samples_per_s": samples / elapsed, "tokens_per_s": tokens / elapsed}
        record["dropped"] = sum(self.global_drops)
        record.update({f"dropped_{r}": n for r, n in zip(DROP_REASONS, self.global_drops)})
        return record

    def _after_step(self, record: dict) -> None:
        self.metrics.add(record)
        every = self.cfg.checkpoint.every_steps
        save = self.step % every == 0 or self._done()
        self.ctx.report(record, self.save if save else None)
        if save:
            self.last_saved = self.step

    def _no_step_message(self) -> str:
        drops = {r: n for r, n in zip(DROP_REASONS, self.global_drops) if n}
        gb = self.cfg.trainer.global_batch_size
        if drops:
            return f"no training step could be made: rows were dropped ({drops}) and fewer than {gb} usable rows remain"
        return f"no training step could be made: the dataset has fewer rows than one global batch ({gb}) or is empty"

    # ------------------------------------------------------------------ save / export

    def save(self, path: str) -> None:
        """Collective: write this worker's part of the checkpoint into ``path``."""
        trainer_state = {"step": self.step, "epoch": self.epoch, "history": self.metrics.history,
                         "global_drops": self.global_drops, "world_size": self.ctx.world_size,
                         "config": to_dict(self.cfg)}
        rows = self.batches.rows_consumed if self.batches.epoch == self.epoch else 0  # 0: the epoch has not begun
        rank_state = {"epoch": self.epoch, "rows_consumed": rows, "drops": dict(self.batches.drops)}
        save_checkpoint(path, self.model, self.optimizer, self.scheduler, trainer_state, rank_state, self.ctx.rank)

    def export(self) -> dict[str, str]:
        if not self.cfg.output.export:
            return {}
        return export_student(self.model, self.cfg, self.ctx.device, self.ctx.rank)

    def summary(self) -> dict[str, Any]:
        return {"steps": self.step, "epoch": self.epoch, "resumed_from_step": self.resumed_from,
                "dropped": dict(zip(DROP_REASONS, self.global_drops)), "history": self.metrics.history}

    def close(self) -> None:
        self.metrics.close()


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def warn_on_changes(state: dict, cfg: DistillConfig, world_size: int) -> None:
    """A resumed run continues the checkpoint's run: say what differs from the config that wrote it."""
    if state.get("world_size") != world_size:
        log.warning("checkpoint written by %s workers, resuming with %d: the data position is approximate",
                    state.get("world_size"), world_size)
    before, now = flatten(state.get("config", {})), flatten(to_dict(cfg))
    changed = sorted(k for k in now if k in before and before[k] != now[k] and not k.startswith("ray."))
    if changed:
        log.warning("resuming a run whose config changed since its checkpoint: %s", ", ".join(changed))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
