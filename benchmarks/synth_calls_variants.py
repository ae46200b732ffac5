"""The side-by-side runs of ``bench_synth_calls.py``: early stop off / exact / normalizer, served vs per-stage models.

Every run synthesizes the same demo scenes with the same teachers in its own output dir, in this process
and on one local Ray instance (``run_synthesis`` starts it on first use and reuses it). What is compared
comes from each run's stats.json: calls and tokens per role, the answer stages' ``early_stopped`` and
``samples_saved`` flags, ``models[*].loads`` and the run's wall time.
"""

from __future__ import annotations

import os
import tempfile

EARLY_STOP = ("off", "exact", "normalizer")
GROUPS = (("teacher + answerers", ("teacher", "answerers")), ("judge", ("judge",)))
# The paper's consensus threshold, without a judge: random answerers rarely reach 6 of 8, so most
# questions are lost after the first answerer's 4 samples and early stop has something to skip.
PAPER = ("consensus.threshold=0.75", "consensus.mode=normalizer")


def run_variant(config: str, images: int, name: str, overrides: list[str], root: str) -> dict:
    """One synthesis run of ``config`` on ``images`` demo scenes plus ``overrides``; its stats.json."""
    from zwz_ray.config import load_config
    from zwz_ray.synth.config import SynthConfig
    from zwz_ray.synth.run import run_synthesis

    base = [f"output.dir={os.path.join(root, name)}", "output.overwrite=true", "ray.progress_bars=false",
            "input.generate_demo=true", f"demo.n={images}",
            f"demo.dir={os.path.join(tempfile.gettempdir(), 'zwz_bench', f'scenes_{images}')}"]
    cfg = load_config(SynthConfig, config, [*base, *overrides])
    result = run_synthesis(cfg)
    print(f"--- {name}: {' '.join(overrides)}\n{result.summary()}", flush=True)
    return result.stats


def early_stop_set(rule: str) -> str:
    # quoted: YAML reads a bare `off` as the boolean false
    return f'consensus.early_stop="{rule}"'


def run_all(config: str, images: int) -> dict[str, dict]:
    """Stats per run name: ``serve_<rule>`` and ``actors_off`` at the config's threshold, ``paper_<rule>`` at 0.75."""
    from zwz_ray.config import load_config
    from zwz_ray.runtime import init_ray
    from zwz_ray.synth.config import SynthConfig

    init_ray(load_config(SynthConfig, config, ["ray.progress_bars=false"]).ray)  # before any run: no run's wall time has Ray's start
    root = tempfile.mkdtemp(prefix="zwz_bench_calls_")
    runs = {}
    for rule in EARLY_STOP:
        runs[f"serve_{rule}"] = run_variant(config, images, f"serve_{rule}", ["serving.mode=serve", early_stop_set(rule)], root)
    runs["actors_off"] = run_variant(config, images, "actors_off", ["serving.mode=actors", early_stop_set("off")], root)
    for rule in EARLY_STOP:
        runs[f"paper_{rule}"] = run_variant(config, images, f"paper_{rule}",
                                            ["serving.mode=serve", early_stop_set(rule), *PAPER], root)
    return runs


# --------------------------------------------------------------------------- numbers from stats.json


def totals(stats: dict, role_of, skip: set[str] = frozenset()) -> dict[str, dict[str, int]]:
    """Per group of GROUPS: calls, prompt and generated tokens summed over its stages."""
    out = {title: {"calls": 0, "prompt": 0, "gen": 0} for title, _ in GROUPS}
    for stage, s in stats["stages"].items():
        if stage in skip:
            continue
        for title, roles in GROUPS:
            if role_of(stage) in roles:
                for m in s["models"].values():
                    out[title]["calls"] += m["calls"]
                    out[title]["prompt"] += m["prompt_tokens"]
                    out[title]["gen"] += m["completion_tokens"]
    return out


def reference_totals(lines: list[dict]) -> dict[str, dict[str, float]]:
    """The same groups for the reference pattern (``compare``'s lines)."""
    out = {}
    for title, roles in GROUPS:
        sel = [ln for ln in lines if ln["role"] in roles]
        out[title] = {"calls": sum(ln["ref_calls"] for ln in sel), "prompt": sum(ln["ref_prompt_tokens"] for ln in sel),
                      "gen": sum(ln["ref_completion_tokens"] for ln in sel)}
    return out


def flag(stats: dict, name: str) -> int:
    return sum(s.get("flags", {}).get(name, 0) for s in stats["stages"].values())


def questions(stats: dict) -> int:
    """Questions that reached the first answerer."""
    return next((s["rows_in"] for stage, s in stats["stages"].items() if stage.startswith("answers_")), 0)


def loads(stats: dict) -> dict[str, int]:
    return {label: m.get("loads", 0) for label, m in stats.get("models", {}).items()}


# --------------------------------------------------------------------------- printing


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(title: str, rows: dict[str, tuple[dict, dict]], divisor: str) -> None:
    """``rows``: label -> (group totals, extra: kept, questions, skipped, saved); numbers divided by ``divisor``."""
    print(f"\n{title}")
    head = f"{'':>12} {'kept':>5} {'qs':>4}"
    for group, _ in GROUPS:
        head += f" | {group + ': calls':>26} {'prompt':>7} {'gen':>6}"
    print(head + f" | {'skipped':>7} {'saved':>6}")
    for label, (tot, extra) in rows.items():
        div = extra[divisor]
        line = f"{label:>12} {extra['kept']:>5} {extra['questions']:>4}"
        for group, _ in GROUPS:
            t = tot[group]
            line += (f" | {t['calls'] / div:>26.2f} {t['prompt'] / div:>7.0f} {t['gen'] / div:>6.0f}" if div
                     else f" | {'-':>26} {'-':>7} {'-':>6}")
        skipped, saved = extra.get("skipped"), extra.get("saved")
        print(line + (f" | {skipped:>7} {saved:>6}" if skipped is not None else f" | {'-':>7} {'-':>6}"))


def ratio_lines(rows: dict[str, tuple[dict, dict]], pairs: list[tuple[str, str]]) -> None:
    """``a / b`` of calls, prompt and generated tokens per group for each (a, b) of ``pairs``."""
    for a, b in pairs:
        parts = []
        for group, _ in GROUPS:
            ta, tb = rows[a][0][group], rows[b][0][group]
            parts.append(f"{group}: calls {_ratio(ta['calls'], tb['calls'])}, prompt {_ratio(ta['prompt'], tb['prompt'])}, "
                         f"gen {_ratio(ta['gen'], tb['gen'])}")
        print(f"  {a} / {b}: " + "; ".join(parts))


def extra_of(stats: dict) -> dict:
    return {"kept": stats["kept_rows"], "questions": questions(stats), "skipped": flag(stats, "early_stopped"),
            "saved": flag(stats, "samples_saved")}


def early_stop_tables(runs: dict[str, dict], role_of, reference: dict, skip: set[str]) -> None:
    rows = {rule: (totals(runs[f"serve_{rule}"], role_of, skip), extra_of(runs[f"serve_{rule}"])) for rule in EARLY_STOP}
    off = runs["serve_off"]
    rows["reference"] = (reference, {"kept": off["kept_rows"], "questions": questions(off)})
    table("A. the config's consensus (threshold and judge as configured), per kept row:", rows, "kept")
    print("ratios (same runs, totals):")
    ratio_lines(rows, [("reference", rule) for rule in EARLY_STOP] + [("off", "exact"), ("off", "normalizer")])

    paper = {rule: (totals(runs[f"paper_{rule}"], role_of, skip), extra_of(runs[f"paper_{rule}"])) for rule in EARLY_STOP}
    table("B. paper threshold 0.75, consensus.mode=normalizer (no judge), per question asked "
          "(random answers keep ~no row, so per kept row is undefined):", paper, "questions")
    print("ratios (same runs, totals):")
    ratio_lines(paper, [("off", "exact"), ("off", "normalizer")])
    print("  B measures the MECHANISM on random tiny models (their answers almost never agree, so most questions\n"
          "  are lost after the first answerer), not real savings; without a judge `exact` and `normalizer` are\n"
          "  the same rule. benchmarks/bench_early_stop.py simulates real-ish answer distributions.")


def loads_table(runs: dict[str, dict]) -> None:
    serve, actors = runs["serve_off"], runs["actors_off"]
    ls, la = loads(serve), loads(actors)
    print("\nC. model loads per run (early_stop off, the config's consensus): serving.mode serve (one deployment per model)"
          " vs actors (one copy per stage actor)")
    print(f"{'model':>20} {'serve':>6} {'actors':>7}")
    for label in sorted(set(ls) | set(la)):
        print(f"{label:>20} {ls.get(label, 0):>6} {la.get(label, 0):>7}")
    total_s, total_a = sum(ls.values()), sum(la.values())
    print(f"{'all models':>20} {total_s:>6} {total_a:>7}   actors / serve: {_ratio(total_a, total_s)}")
    walls = [runs[f"serve_{rule}"]["this_run"]["wall_s"] for rule in EARLY_STOP]
    ws, wa = serve["this_run"]["wall_s"], actors["this_run"]["wall_s"]
    print(f"wall time (ROUGH: shared CPU cores, tiny random models, model loads and Serve start-up included): "
          f"serve {ws:.0f}s (early stop exact / normalizer runs, same work: {walls[1]:.0f}s / {walls[2]:.0f}s), "
          f"actors {wa:.0f}s, actors / serve {_ratio(wa, ws)}; kept rows {serve['kept_rows']} vs {actors['kept_rows']}")
