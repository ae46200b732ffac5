"""Single-pass answers vs the zoom agent (thinking with images): items/s on the same model and items.

    python benchmarks/bench_agent.py                                  # tiny:qwen2_5_vl, 16 items, CPU
    python benchmarks/bench_agent.py --model tiny:qwen3_vl --max-turns 4
    python benchmarks/bench_agent.py --model Qwen/Qwen3-VL-8B-Instruct --device cuda --grammar off --items 64

The paper's speed claim (its Fig. 5: ZwZ-8B ~1.72 samples/s vs Qwen3-VL-8B with a zoom tool ~0.23,
about 7-10x) is a ratio of these two numbers. One model is loaded once; then, alternating for
``--repeats`` rounds, the same items (the global view of a generated ZoomBench-layout benchmark) go
through both modes in batches of ``--batch-size``:

* single pass: the student prompt, one ``Engine.chat`` per batch (``zwz_ray.eval.stages.ViewAnswerer``);
* zoom agent: ``zwz_ray.eval.agent.ZoomAgent``, one ``Engine.chat`` per turn for the batch's active items.

The best round of each is reported (shared machines are noisy), with the ratio single / agent of
items/s, the agent's mean turns and tool calls, and tokens per item. With random-weight tiny models
the agent's choices (zoom or answer) are arbitrary; the grammar only keeps each turn well formed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import pandas as pd


def _items(path: str, n: int) -> list[dict]:
    from zwz_ray.eval.config import BenchmarkConfig
    from zwz_ray.eval.items import explode_views
    from zwz_ray.eval.loaders import open_benchmark

    bench = open_benchmark(BenchmarkConfig(path=path, limit=n))
    items = pd.concat(list(bench.iter_items(batch_size=16)), ignore_index=True)
    return explode_views(items, ["global"]).to_dict("records")


def single_pass(engine, model_cfg, inference, rows: list[dict], batch: int) -> dict:
    from zwz_ray.eval.stages import ViewAnswerer

    answerer = ViewAnswerer(model_cfg, inference)  # its request builder: the evaluation's own prompt and sampling
    tokens, start = 0, time.perf_counter()
    for i in range(0, len(rows), batch):
        for res in engine.chat(answerer._requests(rows[i:i + batch])):
            tokens += res.prompt_tokens + res.completion_tokens
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items_per_s": len(rows) / seconds, "tokens_per_item": tokens / len(rows)}


def agent(runner, rows: list[dict], batch: int) -> dict:
    from zwz_ray.images import decode_image

    images = [decode_image(r["image"]) for r in rows]
    episodes, start = [], time.perf_counter()
    for i in range(0, len(rows), batch):
        episodes += runner.run([runner.start(r, img) for r, img in zip(rows[i:i + batch], images[i:i + batch])])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items_per_s": len(rows) / seconds,
            "tokens_per_item": statistics.mean(e.prompt_tokens + e.completion_tokens for e in episodes),
            "turns": statistics.mean(e.turns for e in episodes), "tool_calls": statistics.mean(e.tool_calls for e in episodes),
            "malformed": sum(e.malformed_calls for e in episodes), "errors": sum(e.stop == "error" for e in episodes)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny:qwen2_5_vl")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--items", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=24, help="single pass generation limit")
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--agent-max-tokens", type=int, default=96, help="agent generation limit per turn")
    p.add_argument("--grammar", choices=["auto", "on", "off"], default="auto", help="auto: on for tiny:* models")
    p.add_argument("--benchmark", help="a benchmark file; default: a generated one")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    from zwz_ray.config import EngineConfig
    from zwz_ray.engines import build_engine
    from zwz_ray.eval.agent import ZoomAgent, use_grammar
    from zwz_ray.eval.agent_tools import ZoomTool, model_geometry, resolve_coords
    from zwz_ray.eval.config import AgentConfig, InferenceConfig

    path = args.benchmark
    if not path:
        from zwz_ray.eval.writers import make_benchmark_fixture

        path = make_benchmark_fixture(os.path.join(tempfile.mkdtemp(), "bench.parquet"), args.items, seed=0)
    rows = _items(path, args.items)
    model = EngineConfig(model=args.model, device=args.device, dtype=args.dtype, max_batch_requests=args.batch_size)
    inference = InferenceConfig(views=["global"], max_tokens=args.max_tokens)
    grammar = {"auto": "auto", "on": True, "off": False}[args.grammar]
    agent_cfg = AgentConfig(enabled=True, max_turns=args.max_turns, max_tokens=args.agent_max_tokens, grammar=grammar)
    coords, family = resolve_coords(agent_cfg.coords, model)
    tool = ZoomTool(coords, model_geometry(model, family), agent_cfg.min_side, agent_cfg.upscale)
    engine = build_engine(model)
    runner = ZoomAgent(engine, agent_cfg, inference, tool, use_grammar(agent_cfg, model))
    print(f"model {args.model} ({coords} boxes, grammar {'on' if runner.grammars[0] else 'off'}), {len(rows)} items, "
          f"batch {args.batch_size}, single max_tokens {args.max_tokens}, agent max_turns {args.max_turns} x "
          f"{args.agent_max_tokens} tokens")
    singles, agents = [], []
    for r in range(args.repeats):  # alternate the two modes; keep the best of each
        singles.append(single_pass(engine, model, inference, rows, args.batch_size))
        print(f"round {r}: single pass {singles[-1]}", flush=True)
        agents.append(agent(runner, rows, args.batch_size))
        print(f"round {r}: zoom agent  {agents[-1]}", flush=True)
    s, a = max(singles, key=lambda x: x["items_per_s"]), max(agents, key=lambda x: x["items_per_s"])
    print(f"{'mode':<14}{'seconds':>10}{'items/s':>10}{'s/item':>10}{'tokens/item':>13}{'turns':>8}{'tool calls':>12}")
    print(f"{'single pass':<14}{s['seconds']:>10.2f}{s['items_per_s']:>10.3f}{1 / s['items_per_s']:>10.3f}"
          f"{s['tokens_per_item']:>13.0f}{1:>8.2f}{0:>12.2f}")
    print(f"{'zoom agent':<14}{a['seconds']:>10.2f}{a['items_per_s']:>10.3f}{1 / a['items_per_s']:>10.3f}"
          f"{a['tokens_per_item']:>13.0f}{a['turns']:>8.2f}{a['tool_calls']:>12.2f}")
    print(f"malformed tool calls: {a['malformed']}, failed episodes: {a['errors']}")
    print(f"ratio single pass / zoom agent, items/s: {s['items_per_s'] / a['items_per_s']:.2f}x")
    engine.close()


if __name__ == "__main__":
    main()
