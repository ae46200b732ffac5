"""Host memory per Train worker: the former full loading (``trainer.load: full``) vs sharded loading.

A random-weight Qwen2.5-VL student of a few hundred million parameters is built from a config (the
tiny model's tokenizer and processor, larger sizes; nothing is downloaded) and saved in bf16, like
the published checkpoints. Then, in one run, two 2-worker Ray Train jobs over gloo (fresh worker
processes each, so freed memory of one cannot hide the other's) load it, one per mode, and train a
few steps. Each worker samples its own resident set size (VmRSS, every 5 ms, plus the kernel's
high-water mark, reset through /proc/self/clear_refs where allowed) over two phases:
  loading  from just before loading until the model is sharded and ready to step
  steps    the first optimizer steps (fp32 gradients and AdamW moments come on top)
and reports it per rank, absolute and above the process's baseline just before loading (torch,
Ray, transformers and the process group already imported and started). The last line is

    peak RSS per worker: full X GiB, sharded Y GiB, ratio R

for the non-rank-0 worker's loading peak above its baseline, R = X / Y.

    python benchmarks/bench_train_memory.py [--layers 20 --hidden 1024 --steps 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GIB = 2**30


class PeakRSS:
    """Peak resident set size of this process between ``start()`` and ``stop()``."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s, self.peak, self._stop, self._thread = interval_s, 0, threading.Event(), None
        self.hwm_reset = False

    @staticmethod
    def status(field: str) -> int:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def start(self) -> PeakRSS:
        try:  # "5" resets the kernel's peak-RSS counter (VmHWM) of this process
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
                fh.write("5")
            self.hwm_reset = True
        except OSError:  # then the sampler alone measures the peak
            pass
        self.peak, self._stop = self.status("VmRSS"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.status("VmRSS"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.status("VmRSS"), self.status("VmHWM") if self.hwm_reset else 0)


def build_student(out: str, layers: int, hidden: int, vision_depth: int) -> int:
    """A random Qwen2.5-VL saved in bf16 into ``out`` with the tiny model's processor; returns its parameter count."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from zwz_ray.models import resolve_model

    tiny = resolve_model("tiny:qwen2_5_vl")
    config = AutoConfig.from_pretrained(tiny)
    text, vision = config.text_config, config.vision_config
    heads = hidden // 64  # head_dim 64 keeps the tiny model's mrope sections valid
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = hidden, hidden * 11 // 4, layers
    text.num_attention_heads, text.num_key_value_heads = heads, max(1, heads // 8)
    text.layer_types = ["full_attention"] * layers
    vision.hidden_size, vision.intermediate_size, vision.num_heads = 512, 2048, 8
    vision.depth, vision.out_hidden_size, vision.fullatt_block_indexes = vision_depth, hidden, [vision_depth - 1]
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    count = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    del model
    for name in os.listdir(tiny):  # tokenizer, processor and chat template of the tiny model
        if not name.endswith(".safetensors") and name not in ("config.json", "generation_config.json"):
            shutil.copy(os.path.join(tiny, name), out)
    return count


def make_rows(n: int) -> list[dict]:
    from PIL import Image, ImageDraw

    rows = []
    for i in range(n):
        img = Image.new("RGB", (224, 168), (200, 210 + i % 40, 230))
        ImageDraw.Draw(img).rectangle([28, 28, 112, 112], outline=(255, 0, 0), width=3)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        rows.append({"id": f"m{i:03d}", "image": buf.getvalue(), "problem": "What is in the red box? A. cup B. dog",
                     "answer": "AB"[i % 2]})
    return rows


def worker(config: dict) -> None:
    """One Train worker: baseline, load (one mode), first steps; the RSS figures go to ray.train.report."""
    import ray.train
    import torch

    from zwz_ray.config import from_dict
    from zwz_ray.train.config import DistillConfig
    from zwz_ray.train.loop import DistillLoop, WorkerContext

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from train_rows import ListRows  # in-memory rows, shared with the tests

    torch.set_num_threads(1)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg = from_dict(DistillConfig, config["cfg"])
    loop = DistillLoop(cfg, WorkerContext(rank, world, torch.device("cpu")), ListRows(config["rows"][rank::world], False, 0))
    # Imported and read before the baseline: the code and the processor are not the model's memory.
    import peft  # noqa: F401
    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl  # noqa: F401

    from zwz_ray.train.loading import load_student_processor

    load_student_processor(cfg.student)
    baseline = PeakRSS.status("VmRSS")
    meter = PeakRSS().start()
    loop.setup()
    loading = meter.stop()
    meter = PeakRSS().start()
    loop.train()
    steps = meter.stop()
    result = {"rank": rank, "baseline": baseline, "loading": loading, "steps": steps,
              "local_bytes": loop.load_stats.local_bytes, "full_bytes": loop.load_stats.full_bytes}
    out = os.path.join(config["out"], f"{cfg.trainer.load}_rank{rank}.json")
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    loop.close()


def run_mode(mode: str, student: str, rows: list[dict], out: str, steps: int) -> list[dict]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = {"student": student,
           "data": {"path": None, "min_pixels": 3136, "max_pixels": 224 * 224, "max_seq_len": 1024, "shuffle_buffer": 0},
           "trainer": {"micro_batch_size": 1, "epochs": 1, "max_steps": steps, "precision": "fp32", "load": mode,
                       "num_workers": 2},
           "optim": {"lr": 1e-5},
           "checkpoint": {"storage_path": os.path.join(out, "runs"), "every_steps": 10**6},
           "output": {"dir": os.path.join(out, mode), "export": False, "tensorboard": False}}
    start = time.perf_counter()
    TorchTrainer(worker, train_loop_config={"cfg": cfg, "rows": rows, "out": out},
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(storage_path=os.path.join(out, "ray"), name=f"memory_{mode}")).fit()
    print(f"{mode}: {time.perf_counter() - start:.0f} s", flush=True)
    results = []
    for rank in range(2):
        with open(os.path.join(out, f"{mode}_rank{rank}.json"), encoding="utf-8") as fh:
            results.append(json.load(fh))
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=20, help="decoder layers")
    p.add_argument("--hidden", type=int, default=1024, help="decoder hidden size (multiple of 64)")
    p.add_argument("--vision-depth", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args(argv)

    from zwz_ray.config import RayConfig
    from zwz_ray.runtime import init_ray

    with tempfile.TemporaryDirectory(prefix="zwz_bench_mem_") as out:
        student = os.path.join(out, "student")
        count = build_student(student, args.layers, args.hidden, args.vision_depth)
        print(f"student: random Qwen2.5-VL, {count / 1e6:.0f}M parameters ({count * 4 / GIB:.2f} GiB in fp32), "
              f"saved in bf16", flush=True)
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
        init_ray(RayConfig(num_cpus=2, progress_bars=False, log_to_driver=False))
        rows = make_rows(4 * args.steps)
        results = {mode: run_mode(mode, student, rows, out, args.steps) for mode in ("full", "sharded")}
    report(results)


def report(results: dict[str, list[dict]]) -> None:
    def gib(x: float) -> str:
        return f"{x / GIB:.2f}"

    print(f"\n{'load':<8} {'rank':>4} {'baseline':>9} {'load peak':>10} {'above':>7} {'steps peak':>11} {'above':>7} "
          f"{'shard/full params':>18}   (GiB)")
    for mode, ranks in results.items():
        for r in ranks:
            base = r["baseline"]
            print(f"{mode:<8} {r['rank']:>4} {gib(base):>9} {gib(r['loading']):>10} {gib(r['loading'] - base):>7} "
                  f"{gib(r['steps']):>11} {gib(r['steps'] - base):>7} {r['local_bytes'] / r['full_bytes']:>18.2f}")
    full, sharded = (results[m][1]["loading"] - results[m][1]["baseline"] for m in ("full", "sharded"))
    print(f"peak RSS per worker: full {gib(full)} GiB, sharded {gib(sharded)} GiB, ratio {full / sharded:.2f}")


if __name__ == "__main__":
    main()
