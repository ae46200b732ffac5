"""Model calls and prompt tokens per kept row: this pipeline vs the reference algorithm's pattern.

    python benchmarks/bench_synth_calls.py                          # runs configs/synth/laptop.yaml first
    python benchmarks/bench_synth_calls.py --output outputs/synth_laptop   # reuse a finished run

The pipeline asks each answerer for all its samples in ONE request, sends a JSON schema with
every parsed request (so replies parse at the first try) and never retries. The reference
pattern, applied to the very same rows (each stage's rows_in from stats.json):

* one request per sample: 2 answerers x 4 samples = 8 answer requests per question, K = 4
  student requests per item; each request re-sends the prompt and the image;
* free-text replies parsed afterwards, a failed parse retried up to ``--max-attempts`` times.

The reference's parse-failure rate is MEASURED here, per stage, on the same tiny teacher with
``structured_output: off`` (the schema described in the prompt, replies parsed with the same
tolerant parser); the same probe with structured output on is shown next to it. Prompt tokens
per request are taken from the run itself (same prompts, same images).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

STAGE_ROLE = {"proposal": "teacher", "grounding": "teacher", "questions": "teacher", "validation": "teacher",
              "distractors": "teacher", "consensus": "judge", "difficulty": "student"}


def role(stage: str) -> str:
    return "answerers" if stage.startswith("answers_") else STAGE_ROLE.get(stage, "")


def run_pipeline(config: str, out: str) -> str:
    from zwz_ray.config import load_config
    from zwz_ray.synth.config import SynthConfig
    from zwz_ray.synth.run import run_synthesis

    cfg = load_config(SynthConfig, config, [f"output.dir={out}", "ray.progress_bars=false"])
    print(run_synthesis(cfg).summary(), flush=True)
    return out


# --------------------------------------------------------------------------- parse-failure probe


def probe_requests(cfg, n: int):
    """(stage, schema, requests) with the pipeline's own prompts on demo images and crops."""
    from PIL import Image

    from zwz_ray.demo import ensure_demo_images, load_manifest
    from zwz_ray.engines import ChatRequest, SamplingParams, user_message
    from zwz_ray.images import fit_pixels, micro_crop
    from zwz_ray.prompts import answer_prompt, distractor_prompt, proposal_prompt, question_prompt, validation_prompt
    from zwz_ray.synth.stages import ANSWER_SCHEMA, VALIDATION_SCHEMA, distractor_schema, proposal_schema, questions_schema

    folder = os.path.join(tempfile.gettempdir(), "zwz_bench", "probe_scenes")
    ensure_demo_images(folder, n=2, seed=0)
    entry = load_manifest(folder)[0]
    full = Image.open(os.path.join(folder, entry["image"])).convert("RGB")
    budget = cfg.models.teacher.max_pixels or full.width * full.height
    view = fit_pixels(full, 1, budget)
    crops = [fit_pixels(micro_crop(full, d["box"], 2.0), 1, budget) for d in entry["details"]]
    detail = entry["details"][0]

    def make(prompt, images, section, schema):
        return [ChatRequest([user_message(prompt, images)],
                            SamplingParams(1, section.temperature, section.top_p, section.max_tokens, seed=i), schema)
                for i in range(n)]

    return [
        ("proposal", proposal_schema(cfg.proposal.max_objects),
         make(proposal_prompt(cfg.proposal.max_objects), [view], cfg.proposal, proposal_schema(cfg.proposal.max_objects))),
        ("questions", questions_schema(cfg.questions.n),
         make(question_prompt([], cfg.questions.n, detail["name"]), [crops[0]], cfg.questions, questions_schema(cfg.questions.n))),
        ("validation", VALIDATION_SCHEMA,
         make(validation_prompt(detail["question"]), [view, crops[0]], cfg.validation, VALIDATION_SCHEMA)),
        ("answers", ANSWER_SCHEMA, make(answer_prompt(detail["question"]), [crops[0]], cfg.answers, ANSWER_SCHEMA)),
        ("distractors", distractor_schema(cfg.mcq.n_distractors),
         make(distractor_prompt(detail["question"], detail["answer"], cfg.mcq.n_distractors), [view], cfg.mcq,
              distractor_schema(cfg.mcq.n_distractors))),
    ]


def failure_rates(cfg, n: int, structured: str) -> dict[str, float]:
    from dataclasses import replace

    from zwz_ray.engines import build_engine
    from zwz_ray.synth.stages.base import parse_reply

    engine = build_engine(replace(cfg.models.teacher, structured_output=structured))
    rates = {}
    for stage, schema, requests in probe_requests(cfg, n):
        results = engine.chat(requests)
        failed = sum(1 for r in results if r.error or parse_reply(r.texts[0] if r.texts else "", schema)[0] is None)
        rates[stage] = failed / len(results)
    engine.close()
    return rates


# --------------------------------------------------------------------------- accounting


def expected_attempts(p: float, max_attempts: int) -> float:
    """Requests per call when a failed parse is retried up to ``max_attempts`` times in total."""
    return float(max_attempts) if p >= 1 else (1 - p**max_attempts) / (1 - p)


def compare(stats: dict, cfg, rates: dict[str, float], max_attempts: int) -> list[dict]:
    lines = []
    for stage, s in stats["stages"].items():
        r = role(stage)
        if stage == "grounding" and cfg.models.grounding.backend == "sam3":
            continue  # SAM3, not the teacher, and the same forward passes either way
        calls = sum(m["calls"] for m in s["models"].values())
        prompt = sum(m["prompt_tokens"] for m in s["models"].values())
        if not r or not calls or r == "judge":
            continue
        per_row = cfg.answers.samples_per_teacher if r == "answerers" else cfg.difficulty.k if r == "student" else 1
        p = 0.0 if r == "student" else rates.get("answers" if r == "answerers" else stage, 0.0)  # no student retries
        attempts = expected_attempts(p, max_attempts)
        ref_calls = s["rows_in"] * per_row * attempts
        lines.append({"stage": stage, "role": r, "rows_in": s["rows_in"], "calls": calls, "prompt_tokens": prompt,
                      "ref_calls": ref_calls, "ref_prompt_tokens": ref_calls * prompt / calls, "p_fail": p})
    return lines


def report(lines: list[dict], stats: dict, rates_off: dict, rates_on: dict, max_attempts: int) -> None:
    kept = max(1, stats["kept_rows"])
    print("\nparse failures per stage on the tiny teacher (probe): structured off -> on")
    for stage in rates_off:
        print(f"  {stage:>10}: {rates_off[stage]:5.0%} -> {rates_on[stage]:5.0%}")
    print(f"\nkept rows: {stats['kept_rows']}; reference retries a failed parse up to {max_attempts} attempts\n")
    print(f"{'stage':>12} {'rows_in':>7} {'calls':>7} {'ref calls':>9} {'prompt tok':>10} {'ref prompt tok':>14}")
    for ln in lines:
        print(f"{ln['stage']:>12} {ln['rows_in']:>7} {ln['calls']:>7} {ln['ref_calls']:>9.1f} {ln['prompt_tokens']:>10} "
              f"{ln['ref_prompt_tokens']:>14.0f}")
    no_retry = [dict(ln, ref_calls=ln["ref_calls"] / expected_attempts(ln["p_fail"], max_attempts)) for ln in lines
                if ln["role"] in ("teacher", "answerers")]
    c = sum(ln["ref_calls"] for ln in no_retry) / max(1, sum(ln["calls"] for ln in no_retry))
    for title, roles in (("teacher + answerers", {"teacher", "answerers"}), ("student (difficulty)", {"student"})):
        sel = [ln for ln in lines if ln["role"] in roles]
        ours_c, ref_c = sum(ln["calls"] for ln in sel), sum(ln["ref_calls"] for ln in sel)
        ours_t, ref_t = sum(ln["prompt_tokens"] for ln in sel), sum(ln["ref_prompt_tokens"] for ln in sel)
        if not ours_c:
            continue
        print(f"\n{title}: per kept row {ours_c / kept:.1f} calls, {ours_t / kept:.0f} prompt tokens; reference "
              f"{ref_c / kept:.1f} calls, {ref_t / kept:.0f} prompt tokens")
        print(f"  ratio reference / pipeline: calls {ref_c / ours_c:.2f}x, prompt tokens {ref_t / ours_t:.2f}x")
        if "teacher" in roles:
            print(f"  (a reference teacher that always parses, i.e. no retries: calls {c:.2f}x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/synth/laptop.yaml")
    p.add_argument("--output", help="a finished run's output.dir (default: run --config into a temp dir)")
    p.add_argument("--probe-requests", type=int, default=4, help="requests per stage for the parse-failure probe")
    p.add_argument("--max-attempts", type=int, default=3, help="the reference's attempts per call")
    args = p.parse_args()

    from zwz_ray.config import load_config
    from zwz_ray.synth.config import SynthConfig

    cfg = load_config(SynthConfig, args.config)
    out = args.output or run_pipeline(args.config, tempfile.mkdtemp(prefix="zwz_bench_calls_"))
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as fh:
        stats = json.load(fh)
    rates_off = failure_rates(cfg, args.probe_requests, "off")
    rates_on = failure_rates(cfg, args.probe_requests, "auto")
    report(compare(stats, cfg, rates_off, args.max_attempts), stats, rates_off, rates_on, args.max_attempts)


if __name__ == "__main__":
    main()
