"""Shared vs expanded prefill in the transformers engine: seconds per request and prompt tokens prefilled.

    python benchmarks/bench_hf_prefill.py                                   # tiny:qwen2_5_vl, n = 4 and 8
    python benchmarks/bench_hf_prefill.py --model tiny:qwen3_vl --requests 4 --max-tokens 16

The same requests (each with one image and its own seed) go through ONE engine twice per round:
with ``share_prefill`` on (one prefill of every prompt, its cache repeated n times) and off
(``generate(num_return_sequences=n)``, which prefills every prompt n times). Rounds alternate the
order, after one warm-up call of each; the reported time is the median round. ``same texts``
counts the requests whose texts agree on both paths: their logits agree to ~1e-7, but on the flat
distributions of a random tiny model two nearly tied tokens can swap places in the sampler's sort
(batch-size-dependent float sums), and a draw landing between them then changes that sample from
there on (tests/test_engines_hf_prefill.py compares per-step logits). ``prefilled`` is the
engine's count of token positions (padding included) the prompt prefills ran over, per request.
"""

from __future__ import annotations

import argparse
import statistics
import time


def requests(count: int, n: int, max_tokens: int, size: int) -> list:
    from PIL import Image

    from zwz_ray.engines import ChatRequest, SamplingParams, user_message

    out = []
    for i in range(count):
        img = Image.new("RGB", (size, size * 3 // 4), (40 * i % 255, 120, 200))
        img.paste((220, 30, 30), (size // 4, size // 5, size // 2, size // 2))
        words = "List every object in the picture with its colour and position. " * (1 + i % 2)
        sampling = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, seed=i)
        out.append(ChatRequest([user_message(words, [img])], sampling, request_id=str(i)))
    return out


def timed(engine, reqs: list, shared: bool) -> tuple[float, int, list]:
    engine.share_prefill, before = shared, engine.prefilled_tokens
    start = time.perf_counter()
    results = engine.chat(reqs)
    seconds = time.perf_counter() - start
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise SystemExit(f"requests failed: {bad}")
    return seconds, engine.prefilled_tokens - before, [r.texts for r in results]


def measure(engine, reqs: list, rounds: int) -> dict:
    timed(engine, reqs, shared=True)
    timed(engine, reqs, shared=False)  # warm-up of both paths
    times = {True: [], False: []}
    tokens, texts = {}, {}
    for r in range(rounds):
        for shared in (True, False) if r % 2 == 0 else (False, True):
            seconds, tokens[shared], texts[shared] = timed(engine, reqs, shared)
            times[shared].append(seconds)
    per_request = {k: statistics.median(v) / len(reqs) for k, v in times.items()}
    return {
        "s": per_request,
        "prefilled": {k: v / len(reqs) for k, v in tokens.items()},
        "same": f"{sum(a == b for a, b in zip(texts[True], texts[False]))}/{len(reqs)}",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny:qwen2_5_vl")
    p.add_argument("--samples", type=int, nargs="+", default=[4, 8], help="n per request")
    p.add_argument("--requests", type=int, default=4, help="requests per chat call (one generate chunk)")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--image-size", type=int, default=448, help="image width in pixels (height is 3/4 of it)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import torch

    from zwz_ray.config import EngineConfig
    from zwz_ray.engines import build_engine

    engine = build_engine(EngineConfig(backend="hf", model=args.model, device=args.device, max_batch_requests=args.requests))
    print(
        f"{args.model} on {engine.device} (torch threads {torch.get_num_threads()}), {args.requests} requests per call, "
        f"image {args.image_size}px, {args.max_tokens} new tokens, median of {args.rounds} rounds"
    )
    print(
        f"{'n':>3} {'expanded s/req':>15} {'shared s/req':>13} {'expanded/shared':>16} "
        f"{'prefilled/req expanded':>23} {'shared':>7} {'same texts':>11}"
    )
    for n in args.samples:
        m = measure(engine, requests(args.requests, n, args.max_tokens, args.image_size), args.rounds)
        s, tok = m["s"], m["prefilled"]
        print(
            f"{n:>3} {s[False]:>15.4f} {s[True]:>13.4f} {s[False] / s[True]:>16.2f} {tok[False]:>23.0f} {tok[True]:>7.0f} {m['same']:>11}"
        )
    engine.close()


if __name__ == "__main__":
    main()
