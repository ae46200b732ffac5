"""Evaluation throughput: the batched Ray Data path vs a sequential per-item loop, side by side.

    python benchmarks/bench_eval.py                       # tiny:qwen2_5_vl, 32 items, CPU
    python benchmarks/bench_eval.py --items 64 --replicas 2 --batch-size 8
    python benchmarks/bench_eval.py --model Qwen/Qwen3-VL-2B-Instruct --device cuda --num-gpus 1

Both paths answer the same (item, view) rows of the same generated ZoomBench-layout benchmark
with the same model, prompt and greedy decoding:

* sequential: load the model once, then answer the rows one by one (``Engine.chat`` with one
  request each), the way single-process reference scripts do;
* batched: ``zwz_ray.eval.stages.answer_dataset`` (Ray Data, actor pool, batched ``generate``).

Reported: rows/s with and without the model load, and the ratio batched / sequential.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import pandas as pd


def _rows(bench, views: list[str]) -> list[dict]:
    from zwz_ray.eval.items import explode_views

    items = pd.concat(list(bench.iter_items(batch_size=16)), ignore_index=True)
    return explode_views(items, views).to_dict("records")


def sequential(model_cfg, inference, rows: list[dict], threads: int) -> dict:
    import torch

    from zwz_ray.engines import build_engine
    from zwz_ray.eval.stages import ViewAnswerer

    torch.set_num_threads(threads)  # the CPU share a replica gets (Ray sets OMP_NUM_THREADS from num_cpus)
    start = time.perf_counter()
    engine = build_engine(model_cfg)
    loaded = time.perf_counter()
    answerer = ViewAnswerer(model_cfg, inference)  # only for its request builder: same prompt and sampling
    for row in rows:
        engine.chat(answerer._requests([row]))
    end = time.perf_counter()
    engine.close()
    return {"load_s": loaded - start, "answer_s": end - loaded, "total_s": end - start, "calls": engine.stats.calls}


def batched(model_cfg, inference, bench) -> dict:
    from zwz_ray.eval.stages import answer_dataset

    start = time.perf_counter()
    ds = answer_dataset(bench.dataset(), model_cfg, inference, done=set())
    frames = list(ds.iter_batches(batch_format="pandas", batch_size=None))
    end = time.perf_counter()
    out = pd.concat(frames, ignore_index=True)
    # answering wall time of the whole pool: first batch start to last batch end
    span = float((out["answered_at"] - out["batch_latency_s"]).min())
    answering = float(out["answered_at"].max()) - span
    return {"total_s": end - start, "answer_s": answering, "calls": int(out["sent"].astype(bool).sum())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny:qwen2_5_vl")
    p.add_argument("--device", default="cpu")
    p.add_argument("--items", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--num-cpus", type=float, default=float(max(1, (os.cpu_count() or 2) - 1)),
                   help="CPUs per replica (leave one for Ray Data's read tasks)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica")
    p.add_argument("--benchmark", help="a benchmark file; default: a generated one")
    p.add_argument("--repeats", type=int, default=2, help="rounds of (sequential, batched); the best of each is reported")
    args = p.parse_args(argv)

    from zwz_ray.config import EngineConfig, RayConfig, ResourcesConfig
    from zwz_ray.eval.config import BenchmarkConfig, InferenceConfig
    from zwz_ray.eval.loaders import open_benchmark
    from zwz_ray.runtime import init_ray

    path = args.benchmark
    if not path:
        from zwz_ray.eval.writers import make_benchmark_fixture

        path = make_benchmark_fixture(os.path.join(tempfile.mkdtemp(), "bench.parquet"), args.items, seed=0)
    bench = open_benchmark(BenchmarkConfig(path=path, limit=args.items))
    resources = ResourcesConfig(num_cpus=args.num_cpus, num_gpus=args.num_gpus, batch_size=args.batch_size,
                                min_replicas=args.replicas, max_replicas=args.replicas)
    model = EngineConfig(model=args.model, device=args.device, max_batch_requests=args.batch_size, resources=resources)
    inference = InferenceConfig(max_tokens=args.max_tokens)
    rows = _rows(bench, list(inference.views))
    print(f"model {args.model}, {len(rows)} (item, view) rows, max_tokens {args.max_tokens}, batch {args.batch_size}, "
          f"replicas {args.replicas} x {args.num_cpus:g} CPU / {args.num_gpus:g} GPU")

    # logical CPUs enough for the replicas plus Ray Data's read tasks (an actor holding every CPU would starve them)
    init_ray(RayConfig(num_cpus=max(os.cpu_count() or 1, int(args.replicas * args.num_cpus) + 1),
                       progress_bars=False, log_to_driver=False))
    seqs, bats = [], []
    for r in range(args.repeats):  # alternate the two paths; keep the best of each (shared machines are noisy)
        seqs.append(sequential(model, inference, rows, threads=max(1, int(args.num_cpus))))
        print(f"round {r}: sequential {seqs[-1]}", flush=True)
        bats.append(batched(model, inference, bench))
        print(f"round {r}: batched {bats[-1]}", flush=True)
    seq, bat = min(seqs, key=lambda x: x["answer_s"]), min(bats, key=lambda x: x["answer_s"])
    n = len(rows)
    assert all(x["calls"] == n for x in seqs + bats), (seqs, bats)
    seq_rate, seq_rate_load = n / seq["answer_s"], n / seqs[0]["total_s"]  # round 0: the only cold model load
    bat_rate, bat_answer_rate = n / min(b["total_s"] for b in bats), n / bat["answer_s"]
    print(f"{'path':<44}{'seconds':>10}{'rows/s':>10}")
    print(f"{'sequential loop, answering only':<44}{seq['answer_s']:>10.2f}{seq_rate:>10.2f}")
    print(f"{'sequential loop, with model load (round 0)':<44}{seqs[0]['total_s']:>10.2f}{seq_rate_load:>10.2f}")
    print(f"{'batched Ray Data, answering (all replicas)':<44}{bat['answer_s']:>10.2f}{bat_answer_rate:>10.2f}")
    print(f"{'batched Ray Data, whole pass (actors, load)':<44}{n / bat_rate:>10.2f}{bat_rate:>10.2f}")
    print("(the whole Ray pass also starts the replica processes, imports torch there and loads the model in each)")
    print(f"ratio batched / sequential, answering only: {bat_answer_rate / seq_rate:.2f}x")
    print(f"ratio batched / sequential, with model load: {bat_rate / seq_rate_load:.2f}x")


if __name__ == "__main__":
    main()
