"""Model calls and tokens per kept row: this pipeline (early stop off / exact / normalizer) vs the reference pattern.

    python benchmarks/bench_synth_calls.py --images 3            # 7 synthesis runs of configs/synth/laptop.yaml
    python benchmarks/bench_synth_calls.py --output outputs/synth_laptop   # only the reference comparison of a finished run

One run synthesizes the same ``--images`` demo scenes with the same teachers seven times, each in its own
output dir (benchmarks/synth_calls_variants.py): ``consensus.early_stop`` off, exact and normalizer at the
config's consensus (laptop: threshold 0.125 with the judge, where random answerers always keep a question
and early stop never fires), the same three at the paper's threshold 0.75 with ``consensus.mode=normalizer``
(no judge: random answers lose most questions after the first answerer, so this measures the MECHANISM,
not real savings; benchmarks/bench_early_stop.py simulates real-ish answers), and early stop off with
``serving.mode=actors`` for the model loads (``models[*].loads``) and the rough wall time of a per-stage copy
of every model vs one served deployment per model.

The pipeline asks each answerer for all its samples in ONE request, reads every reply with a
parser that never needs a second try (JSON for proposal and questions; the first "VALID:" line;
the last \\boxed{}), asks the consensus judge only when the normaliser leaves the outcome open,
and retries distractors at most ``mcq.max_attempts`` times. The reference pattern, applied to the
very same rows (each stage's rows_in from stats.json):

* one request per sample: 2 answerers x 4 samples = 8 answer requests per question, K = 4
  student requests per item; each request re-sends the prompt and the image;
* one holistic judge call for EVERY question;
* free-text replies parsed afterwards, a failed parse retried up to ``--max-attempts`` times.

The reference's parse-failure rate is MEASURED here, per stage, on the same tiny teacher with
``structured_output: off`` (free text: the JSON schema described in the prompt, reply frames
dropped) and read by the stage's own reader; the same probe with the config's constraints on is
shown next to it. Prompt and completion tokens per request are taken from the run itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # synth_calls_variants

STAGE_ROLE = {"proposal": "teacher", "grounding": "teacher", "questions": "teacher", "validation": "teacher",
              "distractors": "teacher", "consensus": "judge", "difficulty": "student"}


def role(stage: str) -> str:
    return "answerers" if stage.startswith("answers_") else STAGE_ROLE.get(stage, "")


# --------------------------------------------------------------------------- parse-failure probe


def probe_requests(cfg, n: int):
    """(stage, reader, requests) with the pipeline's own prompts, frames and readers on demo images and crops;
    ``reader(text)`` is True when the reply is usable."""
    from PIL import Image

    from zwz_ray.demo import ensure_demo_images, load_manifest
    from zwz_ray.engines import ChatRequest, SamplingParams, user_message
    from zwz_ray.images import fit_pixels, micro_crop
    from zwz_ray.prompts import VERDICT_PREFIX, answer_prompt, distractor_prompt, proposal_prompt, question_prompt, validation_prompt
    from zwz_ray.synth.stages import boxed_contents, proposal_schema, questions_schema, read_answer, read_verdict
    from zwz_ray.synth.stages.base import boxed_frame, frame_of, parse_reply, verdict_frame

    folder = os.path.join(tempfile.gettempdir(), "zwz_bench", "probe_scenes")
    ensure_demo_images(folder, n=2, seed=0)
    entry = load_manifest(folder)[0]
    full = Image.open(os.path.join(folder, entry["image"])).convert("RGB")
    budget = cfg.models.teacher.max_pixels or full.width * full.height
    view = fit_pixels(full, 1, budget)
    crops = [fit_pixels(micro_crop(full, d["box"], 2.0), 1, budget) for d in entry["details"]]
    detail = entry["details"][0]
    a, m, v = cfg.answers, cfg.mcq, cfg.validation

    def make(prompt, images, section, schema=None, grammar=None):
        return [ChatRequest([user_message(prompt, images)],
                            SamplingParams(1, section.temperature, section.top_p, section.max_tokens, seed=i), schema, grammar=grammar)
                for i in range(n)]

    def json_reader(schema):
        return lambda text: parse_reply(text, schema)[0] is not None

    proposal, questions = proposal_schema(cfg.proposal.max_objects), questions_schema(cfg.questions.n)
    return [
        ("proposal", json_reader(proposal), make(proposal_prompt(cfg.proposal.max_objects), [view], cfg.proposal, proposal)),
        ("questions", json_reader(questions), make(question_prompt([], cfg.questions.n), [crops[0]], cfg.questions, questions)),
        ("validation", lambda text: read_verdict(text)[0] is not None,
         make(validation_prompt(detail["question"]), [view, crops[0]], v,
              grammar=frame_of(v, verdict_frame(v.frame_reasoning_chars, VERDICT_PREFIX)))),
        ("answers", lambda text: bool(read_answer(text)),
         make(answer_prompt(detail["question"]), [crops[0]], a, grammar=frame_of(a, boxed_frame(a.frame_reasoning_chars, a.answer_max_chars)))),
        ("distractors", lambda text: len(boxed_contents(text)) >= m.n_distractors,
         make(distractor_prompt(detail["question"], detail["answer"], m.n_distractors), [view], m,
              grammar=frame_of(m, boxed_frame(m.frame_reasoning_chars, m.option_max_chars, m.n_distractors)))),
    ]


def failure_rates(cfg, n: int, structured: str) -> dict[str, float]:
    from dataclasses import replace

    from zwz_ray.engines import build_engine

    engine = build_engine(replace(cfg.models.teacher, structured_output=structured))
    rates = {}
    for stage, reader, requests in probe_requests(cfg, n):
        results = engine.chat(requests)
        failed = sum(1 for r in results if r.error or not reader(r.texts[0] if r.texts else ""))
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
        completion = sum(m["completion_tokens"] for m in s["models"].values())
        if not r or not calls:
            continue
        per_row = cfg.answers.samples_per_teacher if r == "answerers" else cfg.difficulty.k if r == "student" else 1
        p = 0.0 if r in ("student", "judge") else rates.get("answers" if r == "answerers" else stage, 0.0)
        attempts = expected_attempts(p, max_attempts)
        ref_calls = s["rows_in"] * per_row * attempts
        # a reference request carries one sample: generated tokens per sample times its requests
        ref_completion = completion / (calls * per_row) * ref_calls
        lines.append({"stage": stage, "role": r, "rows_in": s["rows_in"], "calls": calls, "prompt_tokens": prompt,
                      "completion_tokens": completion, "ref_calls": ref_calls, "ref_prompt_tokens": ref_calls * prompt / calls,
                      "ref_completion_tokens": ref_completion, "p_fail": p})
    return lines


def report(lines: list[dict], stats: dict, rates_off: dict, rates_on: dict, max_attempts: int) -> None:
    kept = max(1, stats["kept_rows"])
    print("\nunusable replies per stage on the tiny teacher (probe): free text -> the config's constraints")
    for stage in rates_off:
        print(f"  {stage:>10}: {rates_off[stage]:5.0%} -> {rates_on[stage]:5.0%}")
    print(f"\nkept rows: {stats['kept_rows']}; reference retries a failed parse up to {max_attempts} attempts\n")
    print(f"{'stage':>12} {'rows_in':>7} {'calls':>7} {'ref calls':>9} {'prompt tok':>10} {'ref prompt tok':>14} "
          f"{'gen tok':>8} {'ref gen tok':>11}")
    for ln in lines:
        print(f"{ln['stage']:>12} {ln['rows_in']:>7} {ln['calls']:>7} {ln['ref_calls']:>9.1f} {ln['prompt_tokens']:>10} "
              f"{ln['ref_prompt_tokens']:>14.0f} {ln['completion_tokens']:>8} {ln['ref_completion_tokens']:>11.0f}")
    for title, roles in (("teacher + answerers", {"teacher", "answerers"}), ("consensus judge", {"judge"}),
                         ("student (difficulty)", {"student"})):
        sel = [ln for ln in lines if ln["role"] in roles]
        ours_c, ref_c = sum(ln["calls"] for ln in sel), sum(ln["ref_calls"] for ln in sel)
        ours_t, ref_t = sum(ln["prompt_tokens"] for ln in sel), sum(ln["ref_prompt_tokens"] for ln in sel)
        ours_g, ref_g = sum(ln["completion_tokens"] for ln in sel), sum(ln["ref_completion_tokens"] for ln in sel)
        if not ours_c:
            continue
        print(f"\n{title}: per kept row {ours_c / kept:.1f} calls, {ours_t / kept:.0f} prompt + {ours_g / kept:.0f} generated "
              f"tokens; reference {ref_c / kept:.1f} calls, {ref_t / kept:.0f} prompt + {ref_g / kept:.0f} generated tokens")
        print(f"  ratio reference / pipeline: calls {ref_c / ours_c:.2f}x, prompt tokens {ref_t / ours_t:.2f}x, "
              f"generated tokens {ref_g / max(1, ours_g):.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/synth/laptop.yaml")
    p.add_argument("--images", type=int, default=3, help="demo scenes every run synthesizes")
    p.add_argument("--output", help="only the reference comparison of a finished run's output.dir (no runs)")
    p.add_argument("--probe-requests", type=int, default=4, help="requests per stage for the parse-failure probe")
    p.add_argument("--max-attempts", type=int, default=3, help="the reference's attempts per call")
    args = p.parse_args()

    from synth_calls_variants import early_stop_tables, loads_table, reference_totals, run_all

    from zwz_ray.config import load_config
    from zwz_ray.synth.config import SynthConfig

    start = time.perf_counter()
    cfg = load_config(SynthConfig, args.config)
    if args.output:
        with open(os.path.join(args.output, "stats.json"), encoding="utf-8") as fh:
            runs = {"serve_off": json.load(fh)}
    else:
        runs = run_all(args.config, args.images)
    stats = runs["serve_off"]  # the reference pattern has no early stop: it is applied to the rows of the "off" run
    rates_off = failure_rates(cfg, args.probe_requests, "off")
    rates_on = failure_rates(cfg, args.probe_requests, "auto")
    lines = compare(stats, cfg, rates_off, args.max_attempts)
    report(lines, stats, rates_off, rates_on, args.max_attempts)
    if not args.output:
        skip = {"grounding"} if cfg.models.grounding.backend == "sam3" else set()
        early_stop_tables(runs, role, reference_totals(lines), skip)
        loads_table(runs)
    print(f"\nbenchmark wall time: {time.perf_counter() - start:.0f}s ({args.images} images, 7 synthesis runs)")


if __name__ == "__main__":
    main()
