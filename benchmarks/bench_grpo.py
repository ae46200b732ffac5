"""RL step throughput: zwz-ray's GRPO recipe vs TRL's ``GRPOTrainer``, side by side in one process.

Both train the same tiny student from the same weights on the same rows (image + question with the
GRPO prompt), with the same group size, response cap, temperature 1.0 / top_p 1.0, clip 0.2 / 0.3, no
KL, token-mean loss (TRL's "dapo"), AdamW, constant lr, grad clip, and the same reward function; one
optimizer update per RL step (TRL: one generation batch per step). Both generate with transformers
(TRL without vLLM). Per RL step, median over the steps after the warm-up:
  rollout   generating the responses (and scoring them)
  log-prob  recomputing old log-probs (ours always does, as the paper's recipe; TRL skips it when the
            step is on-policy and uses the detached current log-probs instead)
  update    forward + backward + optimizer step
  tokens/s  (prompt + response tokens) / step time

    python benchmarks/bench_grpo.py --steps 8 --prompts 4 --n 4 --max-tokens 32
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from zwz_ray.config import from_dict  # noqa: E402
from zwz_ray.train.config import DistillConfig  # noqa: E402

QUESTION = "How many dots are inside the red box? A. two B. three C. four D. five"


def digit_share(response: str, row: dict) -> float:
    """A reward a tiny random model can learn: the share of digits among the response's characters."""
    return sum(c.isdigit() for c in response) / max(len(response), 1)


def make_rows(n: int, size: int) -> list[dict]:
    rows = []
    for i in range(n):
        img = Image.new("RGB", (size, size), (200, 210 + i % 40, 230))
        draw = ImageDraw.Draw(img)
        draw.rectangle([size // 8, size // 8, size // 2, size // 2], outline=(255, 0, 0), width=3)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        rows.append({"id": f"b{i:04d}", "image": buf.getvalue(), "problem": QUESTION, "answer": "ABCD"[i % 4]})
    return rows


def make_config(args: argparse.Namespace) -> DistillConfig:
    per_step = args.prompts * args.n
    return from_dict(DistillConfig, {
        "student": args.model, "data": {"min_pixels": 3136, "max_pixels": args.image_size ** 2},
        "trainer": {"objective": "grpo", "max_steps": args.steps, "epochs": 1000, "micro_batch_size": per_step, "precision": "fp32",
                    "log_every": 10**6},
        "optim": {"lr": args.lr, "grad_clip": 1.0, "schedule": "constant"},
        "grpo": {"rollout_batch_prompts": args.prompts, "mini_batch_prompts": args.prompts, "logprob_micro_batch": per_step,
                 "rollout": {"n": args.n, "max_response_tokens": args.max_tokens},
                 "reward": {"function": f"{os.path.abspath(__file__)}:digit_share"}},
        "output": {"export": False, "tensorboard": False}})


def run_ours(cfg: DistillConfig, rows: list[dict]) -> list[dict]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from train_rows import ListRows  # in-memory rows, shared with the tests

    from zwz_ray.train.grpo import GRPORecipe
    from zwz_ray.train.loop import WorkerContext

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp(prefix='zwz_bench_pg_')}", rank=0, world_size=1)
    recipe = GRPORecipe(cfg, WorkerContext(0, 1, torch.device("cpu")), ListRows(rows, False, 0))
    recipe.setup()
    recipe.train()
    recipe.close()
    return [{"rollout": r["rollout_s"], "logprob": r["logprob_s"], "update": r["update_s"], "step": r["step_time_s"],
             "tokens": r["tokens"], "reward": r["reward_mean"]} for r in recipe.metrics.history]


def run_trl(cfg: DistillConfig, rows: list[dict], out: str) -> list[dict]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from zwz_ray.engines import as_pil
    from zwz_ray.models import load_vlm
    from zwz_ray.prompts import grpo_prompt

    model, processor = load_vlm(cfg.student, device="cpu", dtype="float32", min_pixels=cfg.data.min_pixels,
                                max_pixels=cfg.data.max_pixels)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": grpo_prompt(r["problem"])}]}],
                               "image": as_pil(r["image"])} for r in rows])

    def reward(prompts, completions, **kwargs):
        return [digit_share(c[0]["content"] if isinstance(c, list) else c, {}) for c in completions]

    g, o = cfg.grpo, cfg.optim
    args = GRPOConfig(
        output_dir=os.path.join(out, "trl"), per_device_train_batch_size=g.rollout_batch_prompts * g.rollout.n,
        num_generations=g.rollout.n, max_completion_length=g.rollout.max_response_tokens, temperature=g.rollout.temperature,
        top_p=g.rollout.top_p, beta=0.0, epsilon=g.clip_low, epsilon_high=g.clip_high, loss_type="dapo", num_iterations=1,
        steps_per_generation=1, max_steps=cfg.trainer.max_steps, learning_rate=o.lr, weight_decay=o.weight_decay,
        max_grad_norm=o.grad_clip, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, seed=0, shuffle_dataset=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=processor)
    phases: dict[str, float] = {}

    @contextmanager
    def timed(name):
        start = time.perf_counter()
        try:
            yield
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

    def wrap(name, fn, when=None):
        def inner(*a, **kw):
            if when is not None and not when():
                return fn(*a, **kw)
            with timed(name):
                return fn(*a, **kw)
        return inner

    inside_rollout = [False]
    generate_and_score = trainer._generate_and_score_completions

    def rollout(*a, **kw):
        inside_rollout[0] = True
        try:
            with timed("rollout_total"):
                return generate_and_score(*a, **kw)
        finally:
            inside_rollout[0] = False

    trainer._generate_and_score_completions = rollout
    trainer._get_per_token_logps_and_entropies = wrap("logprob", trainer._get_per_token_logps_and_entropies, lambda: inside_rollout[0])

    class Steps(TrainerCallback):
        def __init__(self):
            self.records, self._t, self._tokens = [], 0.0, 0.0

        def on_step_begin(self, a, state, control, **kw):
            phases.clear()
            self._t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            step = time.perf_counter() - self._t
            rollout_s, logprob_s = phases.get("rollout_total", 0.0) - phases.get("logprob", 0.0), phases.get("logprob", 0.0)
            self.records.append({"rollout": rollout_s, "logprob": logprob_s, "update": step - rollout_s - logprob_s, "step": step})

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs and self.records:
                self.records[-1]["tokens"], self._tokens = logs["num_tokens"] - self._tokens, logs["num_tokens"]
                self.records[-1]["reward"] = logs.get("reward")

    steps = Steps()
    trainer.add_callback(steps)
    trainer.train()
    return steps.records


def median(records: list[dict], key: str, warmup: int) -> float:
    timed = [r[key] for r in records[warmup:] if r.get(key) is not None] or [r[key] for r in records if r.get(key) is not None]
    return statistics.median(timed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny:qwen2_5_vl")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--prompts", type=int, default=4, help="prompts per RL step")
    p.add_argument("--n", type=int, default=4, help="responses per prompt")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the medians")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = make_config(args)
    rows = make_rows(args.steps * args.prompts, args.image_size)
    with tempfile.TemporaryDirectory(prefix="zwz_bench_grpo_") as out:
        results = {"ours": run_ours(cfg, rows), "trl": run_trl(cfg, rows, out)}
    print(f"\nmodel {args.model}: {args.prompts} prompts x {args.n} responses per step, <= {args.max_tokens} tokens, "
          f"images {args.image_size}px, {args.steps} steps ({args.warmup} warm-up), threads {torch.get_num_threads()}")
    print(f"{'trainer':<8} {'rollout s':>10} {'log-prob s':>11} {'update s':>9} {'step s':>8} {'tokens/s':>9} {'reward first/last':>18}")
    speed = {}
    for name, recs in results.items():
        row = {k: median(recs, k, args.warmup) for k in ("rollout", "logprob", "update", "step")}
        speed[name] = median([{"v": r["tokens"] / r["step"]} for r in recs if r.get("tokens")], "v", args.warmup)
        rewards = [r["reward"] for r in recs if r.get("reward") is not None]
        print(f"{name:<8} {row['rollout']:>10.3f} {row['logprob']:>11.3f} {row['update']:>9.3f} {row['step']:>8.3f} "
              f"{speed[name]:>9.0f} {rewards[0]:>8.3f} / {rewards[-1]:.3f}")
    print(f"ratio ours/trl tokens/s: {speed['ours'] / speed['trl']:.2f}")


if __name__ == "__main__":
    main()
