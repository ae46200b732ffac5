"""Configuration of the GRPO recipe (``distill.grpo`` with ``trainer.objective: grpo``).

Defaults are the paper's EasyR1 recipe (single node): 384 prompts per RL step in mini-batches of
96 prompts x 8 responses (4 updates per step), temperature 1.0, top_p 1.0, 2048 response tokens,
prompts up to 25,000 tokens, clip 0.2 / 0.3, dual clip 3.0, token-mean loss, no KL, no online
filtering, accuracy-only reward. ``trainer.*`` (workers, precision, sharding, epochs, max_steps as
RL steps, micro_batch_size as responses per update forward) and ``optim.*`` apply as for SFT; the
paper's optimiser is ``optim.lr: 1.0e-6`` (constant), see ``configs/distill/grpo_cluster.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from zwz_ray.config import ConfigError, EngineConfig, bounded, section, setting
from zwz_ray.engines.serving import ServingConfig

if TYPE_CHECKING:
    from zwz_ray.train.config import DistillConfig


@dataclass
class RolloutConfig:
    """How responses are sampled from the current policy."""

    engine: Literal["hf", "vllm"] = setting("hf", doc=(
        "hf: transformers generate on an unsharded copy of the policy in every worker (CPU, tests, small GPUs); "
        "vllm: an in-process vllm.LLM per worker, colocated with training (GPU only)"))
    n: int = bounded(8, 2, doc="responses per prompt (the GRPO group); all of a prompt's responses come from one worker")
    temperature: float = bounded(1.0, 0.0, doc="sampling temperature; log-probs are computed at the same temperature")
    top_p: float = bounded(1.0, 0.0, 1.0, doc="nucleus sampling mass")
    max_response_tokens: int = bounded(2048, 1, doc="response cap; a response that reaches it counts as truncated")
    max_prompt_tokens: int = bounded(25000, 16, doc="prompts are never cut: a longer one (image tokens included) is dropped as too_long")
    seed: int = setting(1, doc=(
        "the seed of sample i of prompt p in epoch e is a hash of (seed, e, p's id, i): never of the worker's rank, "
        "so any number of workers draws the same responses"))
    hf_batch_prompts: int = bounded(8, 1, doc=(
        "hf: prompts per generate call (left-padded together); 1 makes responses bit-identical for any worker count, "
        "more is faster but padding changes the logits' last bits"))
    # vllm engine
    generate_batch_prompts: int = bounded(96, 1, doc="vllm: prompts per LLM.generate call (the paper: 96)")
    gpu_memory_utilization: float = bounded(0.6, 0.05, 1.0, doc="vllm: fraction of GPU memory for weights + KV cache (the paper: 0.6)")
    kv_cache_memory_bytes: int | None = bounded(None, 1, doc="vllm: KV cache size in bytes; overrides gpu_memory_utilization")
    max_num_batched_tokens: int = bounded(28000, 256, doc="vllm: tokens per scheduler step (the paper: 28,000)")
    sleep_mode: bool = setting(True, doc="vllm: release weights and KV cache while training runs (CUDA only)")
    enforce_eager: bool = setting(False, doc="vllm: no CUDA graphs (faster start, slower decode)")


@dataclass
class RewardConfig:
    """Reward = (1 - format_weight) x accuracy + format_weight x format, or a function of your own."""

    format_weight: float = bounded(0.0, 0.0, 1.0, doc="weight of the format score (one <answer>...</answer>); the paper: 0")
    function: str | None = setting(None, doc=(
        "'package.module:name' or 'path/to/file.py:name' of a function (response: str, row: dict) -> float "
        "used instead of accuracy; row holds id, problem, answer, is_mcq, question_type"))
    judge: EngineConfig | None = setting(None, doc=(
        "an engine (endpoint, vllm or hf) asked about open answers that the rules cannot decide; "
        "without one such answers score 0 and are counted as undecided"))
    judge_max_tokens: int = bounded(64, 1, doc="the judge's reply budget")
    serving: ServingConfig = section(ServingConfig, doc=(
        "how the judge runs: serve (default): the driver starts ONE Ray Serve deployment of it (judge.resources, "
        "min..max replicas) before training and deletes it after, every worker its client; actors: every worker "
        "loads its own copy. An openai judge is an endpoint either way"))


@dataclass
class GRPOConfig:
    """Group Relative Policy Optimisation on the kept rows."""

    rollout: RolloutConfig = section(RolloutConfig, doc="how responses are sampled")
    reward: RewardConfig = section(RewardConfig, doc="how responses are scored")
    rollout_batch_prompts: int = bounded(384, 1, doc="prompts per RL step across all workers (the paper: 384)")
    mini_batch_prompts: int = bounded(96, 1, doc="prompts per optimizer update across all workers (the paper: 96, so 4 updates per step)")
    ppo_epochs: int = bounded(1, 1, doc="passes over each RL step's responses (the paper: 1)")
    logprob_micro_batch: int = bounded(2, 1, doc="responses per forward when recomputing old (and reference) log-probs")
    clip_low: float = bounded(0.2, 0.0, 1.0, doc="ratio clipped below at 1 - clip_low")
    clip_high: float = bounded(0.3, 0.0, doc="ratio clipped above at 1 + clip_high")
    dual_clip: float | None = bounded(3.0, 1.0, doc="bound on the loss of negative-advantage tokens (ratio x |A|); null disables it")
    log_ratio_clamp: float = bounded(20.0, 0.0, doc="log(pi / pi_old) is clamped to +-this before exp")
    advantage_eps: float = bounded(1e-6, 0.0, doc="added to the group std")
    loss_agg: Literal["token-mean", "seq-mean-token-mean"] = setting("token-mean", doc=(
        "token-mean: average over every response token of the mini-batch across workers; "
        "seq-mean-token-mean: per-response token mean, averaged over responses"))
    kl_coef: float = bounded(0.0, 0.0, doc="low-variance KL penalty to a frozen copy of the student; 0 (the paper) loads no reference")
    online_filtering: bool = setting(False, doc=(
        "drop groups whose rewards are all equal (no signal) and sample more prompts to refill the step"))
    filter_max_tries: int = bounded(3, 1, doc="online filtering: refill rounds per RL step before training on what was kept")

    def check(self, cfg: DistillConfig, where: str) -> None:
        """Cross-checks with the trainer section (run before any work starts)."""
        world = cfg.trainer.num_workers
        if self.rollout_batch_prompts % world or self.mini_batch_prompts % world:
            raise ConfigError(f"{where}.rollout_batch_prompts ({self.rollout_batch_prompts}) and mini_batch_prompts "
                              f"({self.mini_batch_prompts}) must be multiples of trainer.num_workers ({world})")
        if self.rollout_batch_prompts % self.mini_batch_prompts:
            raise ConfigError(f"{where}.rollout_batch_prompts ({self.rollout_batch_prompts}) must be a multiple of "
                              f"mini_batch_prompts ({self.mini_batch_prompts})")
        if self.rollout.engine == "vllm" and not cfg.trainer.use_gpu:
            raise ConfigError(f"{where}.rollout.engine 'vllm' is colocated with training on GPUs: set trainer.use_gpu "
                              "or use the hf engine on CPU")
        if cfg.trainer.grad_accum_steps != 1:
            raise ConfigError(f"{where}: trainer.grad_accum_steps does not apply to GRPO (mini_batch_prompts sets the "
                              "update size, trainer.micro_batch_size the responses per forward); leave it at 1")

    def updates_per_step(self) -> int:
        return self.rollout_batch_prompts // self.mini_batch_prompts * self.ppo_epochs


def grpo_total_updates(cfg: DistillConfig, num_rows: int | None) -> int | None:
    """Optimizer updates of a whole GRPO run (an upper bound: dropped rows shorten epochs)."""
    g, t = cfg.grpo, cfg.trainer
    steps = None if num_rows is None else (num_rows // t.num_workers) // (g.rollout_batch_prompts // t.num_workers) * t.epochs
    if t.max_steps:
        steps = min(steps, t.max_steps) if steps is not None else t.max_steps
    return None if steps is None else steps * g.updates_per_step()
