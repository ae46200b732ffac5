"""GRPO, the paper's training recipe, on one Ray Train worker: setup / rollout / score / update / save.

Features (config keys under ``distill.``; the paper's values are the defaults, see grpo_config):
  * prompts: kept rows + the instruction to reason and answer in <answer></answer>
    (``prompts.grpo_prompt``); never truncated, longer than ``grpo.rollout.max_prompt_tokens`` -> dropped
  * rollouts: ``grpo.rollout.engine`` hf (inference copy, rollout.py) or vllm (colocated, rollout_vllm.py);
    ``n``, ``temperature``, ``top_p``, ``max_response_tokens``; seeds from prompt id + sample index
  * reward: ``grpo.reward`` accuracy through the shared cascade + LLM judge (one Serve deployment the driver
    starts, ``grpo.reward.serving``), ``format_weight``, ``function``
  * advantages: (r - group mean) / (group std + ``grpo.advantage_eps``); all of a group on one worker
  * loss: clipped ratio (``clip_low``, ``clip_high``, ``dual_clip``, ``log_ratio_clamp``), ``loss_agg``
    over the mini-batch across workers, optional ``kl_coef`` to a frozen reference; ``ppo_epochs``
  * batching: ``rollout_batch_prompts`` per RL step in updates of ``mini_batch_prompts``;
    ``trainer.micro_batch_size`` responses per update forward, ``logprob_micro_batch`` per log-prob forward
  * online filtering: ``grpo.online_filtering``, ``grpo.filter_max_tries``
  * optimiser, sharding, precision, checkpoints (``checkpoint.every_steps`` in RL steps), export: as SFT
  * metrics every RL step: ray.train.report, metrics.jsonl, TensorBoard, reward.png

All workers run this loop in lockstep: FSDP2 forwards, the weight sync and the per-step sums are
collectives, so every worker makes the same number of each (equal numbers of groups per worker).
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from zwz_ray.config import to_dict
from zwz_ray.logs import get_logger
from zwz_ray.models import load_vlm
from zwz_ray.train import parallel
from zwz_ray.train.checkpoint import load_checkpoint, save_checkpoint
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.data import RowSource, StepBatches
from zwz_ray.train.examples import DROP_REASONS
from zwz_ray.train.export import export_student
from zwz_ray.train.grpo_batch import Sample, chunks, pack, response_logprobs, to_device
from zwz_ray.train.grpo_loss import clipped_policy_loss, group_advantages, low_var_kl, token_weights
from zwz_ray.train.loop import WorkerContext, warn_on_changes
from zwz_ray.train.metrics import MetricsLog
from zwz_ray.train.optim import make_optimizer, make_scheduler
from zwz_ray.train.reward import Reward
from zwz_ray.train.rollout import Group, HFRollout, PromptEncoder

log = get_logger(__name__)


def load_student(cfg: DistillConfig, device: torch.device, trainable: bool = True) -> tuple[torch.nn.Module, Any]:
    """The student as the SFT loop builds it (zwz_ray.train.loading: rank 0 reads the checkpoint, the others
    build on the meta device; vision frozen / LoRA as configured; FSDP2-sharded). A frozen copy (the optional
    KL reference) is loaded whole on every worker, then sharded."""
    if trainable:
        from zwz_ray.train.loading import load_student as load_sharded

        student = load_sharded(cfg.student, cfg.trainer, cfg.lora, device,
                               min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
        student.processor.tokenizer.padding_side = "right"
        return student.model, student.processor
    model, processor = load_vlm(cfg.student, device="cpu", dtype="float32",
                                min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
    processor.tokenizer.padding_side = "right"
    model.requires_grad_(False)
    model.train(False)
    return parallel.shard_model(model, cfg.trainer, device), processor


def make_engine(cfg: DistillConfig, processor: Any, device: torch.device) -> Any:
    """The rollout engine named by ``grpo.rollout.engine`` (sync / generate / release)."""
    if cfg.grpo.rollout.engine == "vllm":
        from zwz_ray.train.rollout_vllm import VLLMRollout

        return VLLMRollout(cfg, processor, device)
    dtype = "bfloat16" if device.type == "cuda" and cfg.trainer.precision != "fp32" else "float32"
    copy, _ = load_vlm(cfg.student, device="cpu", dtype=dtype, min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
    return HFRollout(copy, processor, cfg.grpo.rollout, device)


class GRPORecipe:
    def __init__(self, cfg: DistillConfig, ctx: WorkerContext, source: RowSource):
        self.cfg, self.ctx, self.source, self.g = cfg, ctx, source, cfg.grpo
        self.step = self.updates = self.epoch = self.skip_rows = 0
        self.resumed_from: int | None = None
        self.last_saved = -1
        self.global_drops = [0] * len(DROP_REASONS)
        self.local_prompts = self.g.rollout_batch_prompts // ctx.world_size

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.trainer.seed)  # identical initial weights (LoRA init) on every worker
        self.model, self.processor = load_student(cfg, ctx.device)
        self.params = parallel.trainable_parameters(self.model)
        self.optimizer = make_optimizer(self.params, cfg.optim, ctx.device, cfg.trainer.fsdp_offload)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim, ctx.total_steps)  # total_steps counts updates
        self.reference = load_student(cfg, ctx.device, trainable=False)[0] if self.g.kl_coef > 0 else None
        self.engine = make_engine(cfg, self.processor, ctx.device)
        self.reward = Reward(self.g.reward, served=ctx.served)
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        encoder = PromptEncoder(self.processor, self.g.rollout.max_prompt_tokens, cfg.data.max_image_bytes)
        self.batches = StepBatches(self.source, encoder, lambda prompts: prompts, 1, 1)
        history = self._restore() if ctx.restore_dir else []
        if self.resumed_from is None:
            seed = cfg.trainer.seed + 1000 * ctx.rank
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        steps = ctx.total_steps // self.g.updates_per_step() if ctx.total_steps else None
        self.metrics = MetricsLog(history, cfg.trainer.log_every, steps, ctx.tensorboard_dir, ctx.rank == 0)

    def _restore(self) -> list[dict]:
        state, rank_state = load_checkpoint(self.ctx.restore_dir, self.model, self.optimizer, self.scheduler, self.ctx.rank)
        self.step = self.last_saved = self.resumed_from = state["step"]
        self.epoch, self.updates = state["epoch"], state["updates"]
        self.global_drops = state.get("global_drops", self.global_drops)
        if self.ctx.rank == 0:
            warn_on_changes(state, self.cfg, self.ctx.world_size)
            log.info("resumed from RL step %d (epoch %d) in %s", self.step, self.epoch, self.ctx.restore_dir)
        if rank_state is not None:
            self.batches.drops.update(rank_state["drops"])
            self.skip_rows = rank_state["rows_consumed"] if rank_state["epoch"] == self.epoch else 0
        return state["history"]

    # ------------------------------------------------------------------ the RL loop

    def train(self) -> None:
        while self.epoch < self.cfg.trainer.epochs and not self._done():
            self.batches.start_epoch(self.epoch, self.skip_rows)
            self.skip_rows = 0
            ended = False
            while not self._done():
                prompts = self._take(self.local_prompts)
                if not self._all_ready(len(prompts) == self.local_prompts):
                    ended = True
                    break
                self._after_step(self.rl_step(prompts))
            if self.step == 0:
                raise ValueError(f"no RL step could be made: fewer than {self.g.rollout_batch_prompts} usable prompts "
                                 f"(dropped: {dict(zip(DROP_REASONS, self.global_drops))})")
            if ended:
                self.epoch += 1
        if self.last_saved != self.step:
            self.ctx.report(self.metrics.history[-1] if self.metrics.history else {"step": self.step}, self.save)
            self.last_saved = self.step

    def rl_step(self, prompts: list) -> dict:
        start = time.perf_counter()
        self.engine.sync(self.model)
        groups = self.engine.generate(prompts, self.epoch)
        scores = self.reward.score([gr.prompt.row() for gr in groups], [gr.texts for gr in groups])
        stats = rollout_stats(groups, scores)
        if self.g.online_filtering:
            groups, scores = self._filter(groups, scores, stats)
        self.engine.release()
        rollout_s = time.perf_counter() - start
        samples = self._samples(groups, scores)
        start = time.perf_counter()
        self._old_logprobs(samples, stats)
        logprob_s = time.perf_counter() - start
        start = time.perf_counter()
        stats.update(self._update(samples))
        return self._record(stats, rollout_s, logprob_s, time.perf_counter() - start)

    # ------------------------------------------------------------------ rollout + score

    def _take(self, k: int) -> list:
        """Up to ``k`` encoded prompts from this epoch (fewer when it runs out)."""
        out = []
        while len(out) < k and (step := self.batches.next_step()) is not None:
            out.append(step[0][0])
        return out

    def _filter(self, groups: list[Group], scores: list, stats: dict) -> tuple[list[Group], list]:
        """Online filtering: keep groups with reward variance, refill, then keep the same count on every worker."""
        kept = [(g, s) for g, s in zip(groups, scores) if has_signal(s)]
        stats["filtered_groups"] = len(groups) - len(kept)
        for _ in range(self.g.filter_max_tries):
            need = self.local_prompts - len(kept)
            if self._sum([float(need > 0)])[0] == 0:
                break
            more = self.engine.generate(self._take(need) if need > 0 else [], self.epoch)  # every worker calls generate
            more_scores = self.reward.score([g.prompt.row() for g in more], [g.texts for g in more])
            kept += [(g, s) for g, s in zip(more, more_scores) if has_signal(s)]
            merge_stats(stats, rollout_stats(more, more_scores))
            stats["filtered_groups"] += sum(not has_signal(s) for s in more_scores)
            stats["refill_groups"] += len(more)
        count = torch.tensor([len(kept)], device=self.ctx.device)
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        stats["surplus_groups"] = len(kept) - int(count)
        kept = kept[: int(count)]
        return [g for g, _ in kept], [s for _, s in kept]

    def _samples(self, groups: list[Group], scores: list) -> list[Sample]:
        if not groups:
            return []
        rewards = torch.tensor([[s.reward for s in sc] for sc in scores])
        adv = group_advantages(rewards, self.g.advantage_eps)
        return [Sample(gr.prompt, resp, float(adv[i, j])) for i, gr in enumerate(groups) for j, resp in enumerate(gr.responses)]

    # ------------------------------------------------------------------ log-probs + update

    @torch.no_grad()
    def _old_logprobs(self, samples: list[Sample], stats: dict) -> None:
        """Old (and reference) log-probs from the policy that sampled, before any update of this step."""
        temp, entropy = self.g.rollout.temperature, 0.0
        for micro in chunks(samples, self.g.logprob_micro_batch):
            batch = to_device(pack(micro, self.pad_id), self.ctx.device)
            logp, ent = response_logprobs(self.model, batch, temp, with_entropy=True)
            entropy += float(ent.sum())
            for s, part in zip(micro, logp.cpu().split([s.length for s in micro])):
                s.old_logp = part
            if self.reference is not None:
                ref, _ = response_logprobs(self.reference, batch, temp)
                for s, part in zip(micro, ref.cpu().split([s.length for s in micro])):
                    s.ref_logp = part
        stats["entropy_sum"], stats["trained_tokens"] = entropy, sum(s.length for s in samples)

    def _update(self, samples: list[Sample]) -> dict:
        g, world = self.g, self.ctx.world_size
        per_update = g.mini_batch_prompts // world * g.rollout.n
        totals = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "clip_high": 0.0, "clip_low": 0.0, "clip_dual": 0.0,
                  "grad_norm": 0.0, "lr": self.scheduler.get_last_lr()[0], "num_updates": 0}
        for _ in range(g.ppo_epochs):
            for mini in chunks(samples, per_update):
                tokens, seqs = self._sum([sum(s.length for s in mini), len(mini)])
                scale = world / (tokens if g.loss_agg == "token-mean" else seqs)  # FSDP averages over workers
                sums = torch.zeros(5, dtype=torch.float64)
                for micro in chunks(mini, self.cfg.trainer.micro_batch_size):
                    sums += self._backward(micro, scale)
                grad_norm = parallel.clip_grad_norm(self.params, self.cfg.optim.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.updates += 1
                pg, kl, high, low, dual = self._sum(sums.tolist())
                norm = tokens if g.loss_agg == "token-mean" else seqs
                totals["pg_loss"] += pg / norm
                totals["kl"] += kl / norm
                totals["loss"] += (pg + g.kl_coef * kl) / norm
                for key, value in (("clip_high", high), ("clip_low", low), ("clip_dual", dual)):
                    totals[key] += value / tokens
                totals["grad_norm"] += float(grad_norm)
                totals["num_updates"] += 1
        n = max(totals["num_updates"], 1)
        return {k: (v / n if k not in ("lr", "num_updates") else v) for k, v in totals.items()}

    def _backward(self, micro: list[Sample], scale: float) -> torch.Tensor:
        g, device = self.g, self.ctx.device
        batch = to_device(pack(micro, self.pad_id), device)
        logp, _ = response_logprobs(self.model, batch, g.rollout.temperature)
        lengths = [s.length for s in micro]
        old = torch.cat([s.old_logp for s in micro]).to(device)
        adv = torch.cat([torch.full((s.length,), s.advantage) for s in micro]).to(device)
        weights = token_weights(lengths, g.loss_agg).to(device)
        terms = clipped_policy_loss(logp, old, adv, weights, g.clip_low, g.clip_high, g.dual_clip, g.log_ratio_clamp)
        loss, kl_sum = terms.loss_sum, torch.zeros((), device=device)
        if self.reference is not None:
            kl_sum = (low_var_kl(logp, torch.cat([s.ref_logp for s in micro]).to(device)) * weights).sum()
            loss = loss + g.kl_coef * kl_sum
        (loss * scale).backward()
        return torch.tensor([float(terms.loss_sum.detach()), float(kl_sum.detach()), terms.clip_high, terms.clip_low,
                             terms.clip_dual], dtype=torch.float64)

    # ------------------------------------------------------------------ metrics

    def _record(self, stats: dict, rollout_s: float, logprob_s: float, update_s: float) -> dict:
        keys = ("responses", "reward_sum", "reward_sq", "correct", "mcq", "mcq_correct", "open", "open_correct", "groups",
                "zero_var_groups", "response_tokens", "prompt_tokens", "truncated", "undecided", "filtered_groups",
                "refill_groups", "surplus_groups", "entropy_sum", "trained_tokens")
        totals = dict(zip(keys, self._sum([float(stats.get(k, 0)) for k in keys])))
        drops = self.batches.drop_vector()
        self.global_drops = [int(x) for x in self._sum(drops)]
        longest = torch.tensor([stats["response_len_max"]], device=self.ctx.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        n, elapsed = max(totals["responses"], 1.0), rollout_s + logprob_s + update_s
        mean = totals["reward_sum"] / n
        self.step += 1
        record = {"step": self.step, "epoch": self.epoch, "updates": self.updates, "lr": stats["lr"], "loss": stats["loss"],
                  "pg_loss": stats["pg_loss"], "kl": stats["kl"], "grad_norm": stats["grad_norm"],
                  "reward_mean": mean, "reward_std": math.sqrt(max(totals["reward_sq"] / n - mean * mean, 0.0)),
                  "accuracy": totals["correct"] / n,
                  "accuracy_mcq": totals["mcq_correct"] / totals["mcq"] if totals["mcq"] else None,
                  "accuracy_open": totals["open_correct"] / totals["open"] if totals["open"] else None,
                  "undecided": totals["undecided"] / n,
                  "zero_variance_groups": totals["zero_var_groups"] / max(totals["groups"], 1.0),
                  "filtered_groups": int(totals["filtered_groups"]), "surplus_groups": int(totals["surplus_groups"]),
                  "response_len_mean": totals["response_tokens"] / n, "response_len_max": int(longest),
                  "truncated_frac": totals["truncated"] / n, "entropy": totals["entropy_sum"] / max(totals["trained_tokens"], 1.0),
                  "clipfrac_high": stats["clip_high"], "clipfrac_low": stats["clip_low"], "clipfrac_dual": stats["clip_dual"],
                  "rollout_s": rollout_s, "logprob_s": logprob_s, "update_s": update_s, "step_time_s": elapsed,
                  "samples": int(totals["responses"]), "tokens": int(totals["response_tokens"] + totals["prompt_tokens"]),
                  "samples_per_s": totals["responses"] / elapsed,
                  "tokens_per_s": (totals["response_tokens"] + totals["prompt_tokens"]) / elapsed,
                  "dropped": sum(self.global_drops)}
        record.update({f"dropped_{r}": n for r, n in zip(DROP_REASONS, self.global_drops)})
        return record

    def _after_step(self, record: dict) -> None:
        self.metrics.add(record)
        save = self.step % self.cfg.checkpoint.every_steps == 0 or self._done()
        self.ctx.report(record, self.save if save else None)
        if save:
            self.last_saved = self.step

    def _done(self) -> bool:
        return self.cfg.trainer.max_steps is not None and self.step >= self.cfg.trainer.max_steps

    def _all_ready(self, ready: bool) -> bool:
        return int(self._sum([int(ready)])[0]) == self.ctx.world_size

    def _sum(self, values: list[float]) -> list[float]:
        vec = torch.tensor(values, dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(vec)
        return vec.tolist()

    # ------------------------------------------------------------------ save / export

    def save(self, path: str) -> None:
        """Collective: this worker's part of the checkpoint (policy, optimizer, data position, RNG, step)."""
        trainer_state = {"step": self.step, "updates": self.updates, "epoch": self.epoch, "history": self.metrics.history,
                         "global_drops": self.global_drops, "world_size": self.ctx.world_size, "config": to_dict(self.cfg)}
        rows = self.batches.rows_consumed if self.batches.epoch == self.epoch else 0
        rank_state = {"epoch": self.epoch, "rows_consumed": rows, "drops": dict(self.batches.drops)}
        save_checkpoint(path, self.model, self.optimizer, self.scheduler, trainer_state, rank_state, self.ctx.rank)

    def export(self) -> dict[str, str]:
        if not self.cfg.output.export:
            return {}
        return export_student(self.model, self.cfg, self.ctx.device, self.ctx.rank)

    def summary(self) -> dict[str, Any]:
        return {"steps": self.step, "updates": self.updates, "epoch": self.epoch, "resumed_from_step": self.resumed_from,
                "dropped": dict(zip(DROP_REASONS, self.global_drops)), "history": self.metrics.history}

    def close(self) -> None:
        self.metrics.close()
        self.engine.close()
        self.reward.close()


def has_signal(scores: list) -> bool:
    return len({s.reward for s in scores}) > 1


def rollout_stats(groups: list[Group], scores: list) -> dict:
    """This worker's sums over its rollouts (summed across workers in the step record)."""
    flat = [(gr, s, len(r), t) for gr, sc in zip(groups, scores) for s, r, t in zip(sc, gr.responses, gr.truncated)]
    mcq = [(gr, s) for gr, s, _, _ in flat if gr.prompt.is_mcq]
    opened = [(gr, s) for gr, s, _, _ in flat if not gr.prompt.is_mcq]
    return {"responses": len(flat), "reward_sum": sum(s.reward for _, s, _, _ in flat),
            "reward_sq": sum(s.reward ** 2 for _, s, _, _ in flat), "correct": sum(s.correct for _, s, _, _ in flat),
            "mcq": len(mcq), "mcq_correct": sum(s.correct for _, s in mcq),
            "open": len(opened), "open_correct": sum(s.correct for _, s in opened),
            "groups": len(groups), "zero_var_groups": sum(not has_signal(sc) for sc in scores),
            "response_tokens": sum(n for _, _, n, _ in flat), "response_len_max": max((n for _, _, n, _ in flat), default=0),
            "prompt_tokens": sum(len(gr.prompt.input_ids) for gr, _, _, _ in flat),
            "truncated": sum(t for _, _, _, t in flat), "undecided": sum(s.rule == "undecided" for _, s, _, _ in flat),
            "filtered_groups": 0, "refill_groups": 0, "surplus_groups": 0}


def merge_stats(stats: dict, more: dict) -> None:
    for key, value in more.items():
        stats[key] = max(stats[key], value) if key == "response_len_max" else stats[key] + value
