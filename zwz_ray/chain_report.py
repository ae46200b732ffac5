"""The chain's ``report.md``: what the run proves, data statistics, training curve, base vs distilled accuracy.

The report is an ordered list of sections (``SECTIONS``). Each section is a function of the
``ReportInput`` that returns its markdown lines (an empty list leaves it out) and writes its own plots
under ``plots/``; a new section is a new function added to the list where it should appear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from fsspec.core import url_to_fs  # noqa: E402

from zwz_ray.eval.metrics import pct  # noqa: E402
from zwz_ray.eval.report import plot_before_after, random_weight_models, save_png  # noqa: E402

# The labels of the two evaluated students; defined here, downstream, so that the report never imports the chain.
BASE_LABEL = "base"
DISTILLED_LABEL = "distilled"


@dataclass
class ReportInput:
    summary: dict  # the content of r2i_summary.json
    fs: Any  # fsspec filesystem of the output folder
    root: str  # the output folder, as a path on ``fs``
    eval_report: str | None = None  # the evaluation job's own report.md

    def plot(self, name: str) -> tuple[str, str]:
        """(path to write through ``fs``, link relative to report.md) of a plot called ``name``."""
        self.fs.makedirs(f"{self.root}/plots", exist_ok=True)
        return f"{self.root}/plots/{name}", f"plots/{name}"


def plot_training(history: list[dict], fs, path: str) -> None:
    """Loss (and learning rate) per optimizer step."""
    steps = [h.get("step", i + 1) for i, h in enumerate(history)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [h.get("loss") for h in history], marker="o", ms=3, label="loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("SFT loss (answer tokens)")
    ax.set_title("Distillation")
    if any("lr" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(steps, [h.get("lr") for h in history], color="tab:orange", alpha=0.6, label="lr")
        ax2.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    save_png(fig, fs, path)


def loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _nonzero(counts: dict) -> str:
    kept = {k: v for k, v in (counts or {}).items() if v}
    return ", ".join(f"{k} {v}" for k, v in kept.items()) or "none"


def caveat_section(r: ReportInput) -> list[str]:
    """Random-weight (``tiny:``) models score ~0 by construction: say so first, and what the run does show."""
    tiny = random_weight_models(r.summary.get("config", {}))
    if not tiny:
        return []
    synth = r.summary.get("synthesis", {})
    problems = synth.get("reconciliation_problems") or []
    if synth.get("streamed"):
        accounting = "synthesis rows were streamed, so there is no written accounting to reconcile"
    elif problems:
        accounting = f"the synthesis accounting does NOT reconcile: {'; '.join(map(str, problems))}"
    else:
        accounting = ("the synthesis accounting reconciles (every image and question is either kept or has a recorded "
                      "drop reason)")
    models = ", ".join(f"`{m}`" for m in tiny)
    return [
        f"> **Random weights.** This run uses tiny random-weight models ({models}). Accuracy is expected to be "
        "about 0 % and the loss shows only that optimisation runs; none of the figures below measure the method.",
        ">",
        "> What the run does prove: every stage ran end to end on the real engines (synthesis on Ray Data actor "
        "pools, distillation on Ray Train, dual-view evaluation of the base and the distilled student), the distilled model "
        f"was exported and evaluated, and {accounting}. Real models give meaningful numbers (see `configs/`).",
        "",
    ]


def synthesis_section(r: ReportInput) -> list[str]:
    stats = r.summary["synthesis"]
    lines = ["## Data synthesis", ""]
    if stats.get("streamed"):
        return [*lines, "Rows were streamed into the trainer without being written (`output.persist_rows: false`).", ""]
    images = stats.get("images", {})
    lines += [f"- images: {images.get('in', 0)} in, {images.get('with_kept_rows', 0)} with kept rows",
              f"- kept rows: {stats.get('kept_rows', 0)}; dropped items: {stats.get('drop_rows', 0)}", "",
              "| stage | rows in | rows out | drop reasons | busy (s) |", "|---|---:|---:|---|---:|"]
    for name, st in stats.get("stages", {}).items():
        reasons = ", ".join(f"{k} {c}" for k, c in sorted(st.get("dropped", {}).items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"| {name} | {st.get('rows_in', 0)} | {st.get('rows_out', 0)} | {reasons} | {st.get('busy_s', 0):.1f} |")
    return [*lines, "", *cost_table(stats.get("cost_per_kept_row"))]


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def cost_table(cost: dict | None) -> list[str]:
    """Per model: calls, tokens and GPU-seconds per kept row, and its model loads (stats.json ``cost_per_kept_row``)."""
    if not cost or not cost.get("models"):
        return []
    kept = cost.get("kept_rows", 0)
    lines = [f"Model cost per kept row ({kept} kept rows; GPU-s = engine seconds x GPUs of one replica, "
             "- where unknown or not metered):", "",
             "| model | calls | prompt tokens | generated tokens | GPU-s | loads |", "|---|---:|---:|---:|---:|---:|"]
    rows = [(label, m["per_kept_row"], m.get("loads", 0), m.get("metered", True)) for label, m in cost["models"].items()]
    rows.append(("all metered models", cost["all_models"]["per_kept_row"], None, True))
    for label, per, loads, metered in rows:
        name = label if metered else f"{label} (not metered)"
        lines.append(f"| {name} | {_num(per['calls'])} | {_num(per['prompt_tokens'])} | {_num(per['generated_tokens'])} "
                     f"| {_num(per['gpu_s'], 2)} | {'' if loads is None else loads} |")
    if not kept:
        lines.append("No row was kept, so there is nothing to divide by; stats.json `cost_per_kept_row` holds the totals.")
    return [*lines, ""]


def distillation_section(r: ReportInput) -> list[str]:
    dist = r.summary["distillation"]
    history = dist.get("history") or []
    first = history[0].get("loss") if history else None
    lines = ["## Distillation", "",
             f"- optimizer steps: {dist['steps']}; loss {loss(first)} (first step) -> {loss(dist['final_loss'])} (last)",
             f"- rows skipped by the trainer: {_nonzero(dist['dropped'])}", f"- exported model: `{dist['export_dir']}`", ""]
    if history and "reward_mean" in history[0]:  # GRPO: the loss alone says little
        zero = sum(r.get("zero_variance_groups", 0.0) for r in history) / len(history)
        lines[-1:-1] = [f"- GRPO reward (mean of the step's responses): {history[0]['reward_mean']:.3f} (first step) -> "
                        f"{history[-1]['reward_mean']:.3f} (last); groups with equal rewards: {100 * zero:.0f}% of all "
                        "(they carry zero advantage, so no learning signal)"]
    if history:
        path, link = r.plot("training.png")
        plot_training(history, r.fs, path)
        lines += [f"![training curve]({link})", ""]
    return lines


def evaluation_section(r: ReportInput) -> list[str]:
    models = r.summary["evaluation"].get("models", {})
    lines = ["## Evaluation: base vs distilled student", "",
             "Accuracy in % of the benchmark's items; zooming gap = regional - global accuracy, in percentage points.", "",
             "| model | global acc (%) | regional acc (%) | zooming gap (pts) | items |", "|---|---:|---:|---:|---:|"]
    for label, m in models.items():
        views = m.get("views", {})
        gap = (m.get("zooming_gap") or {}).get("gap")
        lines.append(f"| {label} | {pct(views.get('global', {}).get('accuracy'))} | {pct(views.get('regional', {}).get('accuracy'))} "
                     f"| {'-' if gap is None else f'{100 * gap:+.2f}'} | {m.get('n_items', 0)} |")
    lines.append("")
    if BASE_LABEL in models and DISTILLED_LABEL in models:
        path, link = r.plot("before_after.png")
        plot_before_after(models, BASE_LABEL, DISTILLED_LABEL, r.fs, path)
        lines += [f"![before and after: base vs distilled per view]({link})", ""]
    else:
        lines += ["No before/after plot: the base student was not evaluated (`evaluate_base: false`).", ""]
    if r.eval_report:
        lines += [f"Full evaluation report (per-dimension tables, judge rules, latency, attention): `{r.eval_report}`", ""]
    return lines


def run_section(r: ReportInput) -> list[str]:
    timings = r.summary.get("timings", {})
    ray_info = r.summary.get("ray", {})
    return ["## Timings", "", *[f"- {k}: {v:.1f}" for k, v in timings.items()], "",
            f"Ray cluster: {ray_info.get('nodes', '?')} node(s), resources {ray_info.get('resources', {})}", ""]


Section = Callable[[ReportInput], list[str]]
SECTIONS: list[Section] = [caveat_section, synthesis_section, distillation_section, evaluation_section, run_section]


def render(r: ReportInput, sections: list[Section] | None = None) -> str:
    lines = ["# R2I run report", ""]
    for section in SECTIONS if sections is None else sections:
        lines += section(r)
    return "\n".join(lines)


def write_report(out_dir: str, summary: dict, eval_report: str | None = None) -> str:
    """Write ``report.md`` and its plots under ``out_dir``; return the report's path."""
    fs, root = url_to_fs(out_dir)
    fs.makedirs(f"{root}/plots", exist_ok=True)
    text = render(ReportInput(summary, fs, root, eval_report))
    path = f"{root}/report.md"
    with fs.open(path, "w") as fh:
        fh.write(text)
    return path if "://" not in out_dir else f"{out_dir.rstrip('/')}/report.md"
