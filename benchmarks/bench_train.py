"""Training step throughput: zwz-ray's distillation loop vs the Hugging Face ``Trainer``, side by side.

Both train the same student from the same weights on the same encoded rows, in the same order,
with the same batch, AdamW, constant lr, grad clip and token-mean loss on the answer tokens, so
their loss curves should coincide; the script prints the largest gap. Timed per optimizer step
(forward + backward + clip + update), first steps excluded as warm-up:
  ours          the loop in this process (FSDP2 over a 1-process gloo group; no Ray overhead)
  hf            transformers.Trainer (sequential sampler; the base class of TRL's SFTTrainer)
  ours+ray      (--ray) the same loop as a 1-worker Ray Train TorchTrainer job; its step times
                exclude the per-step ray.train.report, which the run's wall time includes

    python benchmarks/bench_train.py --steps 20 --batch 4 --image-size 224 [--ray]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from zwz_ray.config import from_dict  # noqa: E402
from zwz_ray.train.config import DistillConfig  # noqa: E402

QUESTION = "How many dots are inside the red box? A. two B. three C. four D. five"


def make_rows(n: int, size: int) -> list[dict]:
    rows = []
    for i in range(n):
        img = Image.new("RGB", (size, size * 3 // 4), (200, 210 + i % 40, 230))
        draw = ImageDraw.Draw(img)
        draw.rectangle([size // 8, size // 8, size // 2, size // 2], outline=(255, 0, 0), width=3)
        for k in range(2 + i % 4):
            draw.ellipse([size // 6 + 9 * k, size // 4, size // 6 + 9 * k + 6, size // 4 + 6], fill=(0, 0, 0))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        rows.append({"id": f"b{i:04d}", "image": buf.getvalue(), "problem": QUESTION, "answer": "ABCD"[i % 4]})
    return rows


def make_config(args: argparse.Namespace, out: str) -> DistillConfig:
    pixels = args.image_size * args.image_size
    return from_dict(DistillConfig, {
        "student": args.model,
        "data": {"path": os.path.join(out, "rows"), "min_pixels": 3136, "max_pixels": pixels, "max_seq_len": 4096,
                 "shuffle_buffer": 0},
        "trainer": {"micro_batch_size": args.batch, "epochs": 1000, "max_steps": args.steps, "precision": "fp32",
                    "log_every": 10**6},
        "optim": {"lr": args.lr, "weight_decay": 0.0, "grad_clip": 1.0, "schedule": "constant"},
        "checkpoint": {"storage_path": os.path.join(out, "runs"), "run_name": "bench", "every_steps": 10**6},
        "output": {"dir": os.path.join(out, "ours"), "export": False, "tensorboard": False},
    })


def run_ours(cfg: DistillConfig, rows: list[dict]) -> tuple[list[float], list[float], float]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from train_rows import ListRows  # in-memory rows, shared with the tests

    from zwz_ray.train.loop import DistillLoop, WorkerContext

    if not dist.is_initialized():
        store = tempfile.mktemp(prefix="zwz_bench_pg_")
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    loop = DistillLoop(cfg, WorkerContext(0, 1, torch.device("cpu")), ListRows(rows, False, 0))
    loop.setup()
    start = time.perf_counter()
    loop.train()
    wall = time.perf_counter() - start
    hist = loop.metrics.history
    return [r["loss"] for r in hist], [r["step_time_s"] for r in hist], wall


def run_hf(cfg: DistillConfig, rows: list[dict], out: str) -> tuple[list[float], list[float], float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from zwz_ray.models import load_vlm
    from zwz_ray.train.objectives import MODEL_INPUTS, SFTObjective

    model, processor = load_vlm(cfg.student, device="cpu", dtype="float32",
                                min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
    model.train()
    objective = SFTObjective(processor, cfg.data.max_seq_len)
    examples = [objective.encode(r) for r in rows]  # encoded up front: the HF timer sees collation only

    def collator(batch):
        full = objective.collate(batch)
        return {k: full[k] for k in (*MODEL_INPUTS, "labels") if k in full}

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.losses, self._t = [], [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    timer = StepTimer()
    o = cfg.optim
    targs = TrainingArguments(
        output_dir=os.path.join(out, "hf"), per_device_train_batch_size=cfg.trainer.micro_batch_size,
        max_steps=cfg.trainer.max_steps, learning_rate=o.lr, weight_decay=o.weight_decay, max_grad_norm=o.grad_clip,
        adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_epsilon=o.eps, lr_scheduler_type="constant",
        warmup_steps=0, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0,
        train_sampling_strategy="sequential", optim="adamw_torch", disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=examples, data_collator=collator, callbacks=[timer])
    start = time.perf_counter()
    trainer.train()
    return timer.losses, timer.times, time.perf_counter() - start


def run_ray(cfg: DistillConfig, rows: list[dict]) -> tuple[list[float], list[float], float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zwz_ray.config import RayConfig
    from zwz_ray.runtime import init_ray
    from zwz_ray.train import run_distill

    os.makedirs(cfg.data.path, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(cfg.data.path, "part-0.parquet"))
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    threads = torch.get_num_threads()  # the worker gets as many CPUs (and torch threads) as this process
    init_ray(RayConfig(num_cpus=threads + 1, progress_bars=False, log_to_driver=False))
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, cpus_per_worker=float(threads)))
    start = time.perf_counter()
    result = run_distill(cfg)
    return [r["loss"] for r in result.history], [r["step_time_s"] for r in result.history], time.perf_counter() - start


def stats(times: list[float], warmup: int, batch: int) -> tuple[float, float]:
    timed = times[warmup:] or times
    median = statistics.median(timed)
    return median * 1000, batch / median


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny:qwen2_5_vl")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    p.add_argument("--rounds", type=int, default=3, help="alternate ours/hf this many times; the best round counts")
    p.add_argument("--ray", action="store_true", help="also run the loop as a 1-worker Ray Train job")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="zwz_bench_") as out:
        cfg = make_config(args, out)
        rows = make_rows(args.steps * args.batch, args.image_size)
        results: dict[str, list] = {"ours": [], "hf": []}
        for _ in range(args.rounds):  # alternating rounds; on a shared machine the fastest round is the signal
            results["ours"].append(run_ours(cfg, rows))
            results["hf"].append(run_hf(cfg, rows, out))
        results = {name: min(runs, key=lambda r: stats(r[1], args.warmup, args.batch)[0]) for name, runs in results.items()}
        if args.ray:
            results["ours+ray"] = run_ray(cfg, rows)
    report(results, args)


def report(results: dict, args: argparse.Namespace) -> None:
    print(f"\nmodel {args.model}, batch {args.batch}, {args.steps} steps ({args.warmup} warm-up), "
          f"images {args.image_size}px, threads {torch.get_num_threads()}, best of {args.rounds} rounds")
    print(f"{'trainer':<10} {'median ms/step':>15} {'samples/s':>10} {'wall s':>8}")
    speeds = {}
    for name, (_, times, wall) in results.items():
        ms, sps = stats(times, args.warmup, args.batch)
        speeds[name] = sps
        print(f"{name:<10} {ms:>15.1f} {sps:>10.2f} {wall:>8.1f}")
    print(f"ratio ours/hf samples/s: {speeds['ours'] / speeds['hf']:.2f}")
    ours, hf = results["ours"][0], results["hf"][0]
    n = min(len(ours), len(hf))
    print(f"loss curves ({n} steps): max |ours - hf| = {max(abs(a - b) for a, b in zip(ours[:n], hf[:n])):.2e}; "
          f"first {ours[0]:.4f} / {hf[0]:.4f}, last {ours[n - 1]:.4f} / {hf[n - 1]:.4f}")
    if "ours+ray" in results:
        ray_losses = results["ours+ray"][0]
        gap = max(abs(a - b) for a, b in zip(ours, ray_losses))
        print(f"ratio ours+ray/hf samples/s: {speeds['ours+ray'] / speeds['hf']:.2f}; max |ours - ours+ray| loss = {gap:.2e}")


if __name__ == "__main__":
    main()
