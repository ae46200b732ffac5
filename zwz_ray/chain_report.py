"""The chain's ``report.md``: data statistics, training curves, before/after accuracy by view and dimension."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from fsspec.core import url_to_fs  # noqa: E402

from zwz_ray.eval.metrics import pct  # noqa: E402
from zwz_ray.eval.report import plot_dimensions, save_png  # noqa: E402


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


def _nonzero(counts: dict) -> str:
    kept = {k: v for k, v in (counts or {}).items() if v}
    return ", ".join(f"{k} {v}" for k, v in kept.items()) or "none"


def _synthesis_section(stats: dict) -> list[str]:
    if stats.get("streamed"):
        return ["Rows were streamed into the trainer without being written (`output.persist_rows: false`).", ""]
    images = stats.get("images", {})
    lines = [f"- images: {images.get('in', 0)} in, {images.get('with_kept_rows', 0)} with kept rows",
             f"- kept rows: {stats.get('kept_rows', 0)}; dropped items: {stats.get('drop_rows', 0)}", "",
             "| stage | rows in | rows out | drop reasons | busy s |", "|---|---:|---:|---|---:|"]
    for name, st in stats.get("stages", {}).items():
        reasons = ", ".join(f"{r} {c}" for r, c in sorted(st.get("dropped", {}).items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"| {name} | {st.get('rows_in', 0)} | {st.get('rows_out', 0)} | {reasons} | {st.get('busy_s', 0):.1f} |")
    return [*lines, ""]


def _evaluation_section(evaluation: dict) -> list[str]:
    lines = ["| model | global acc | regional acc | zooming gap | items |", "|---|---:|---:|---:|---:|"]
    for label, m in evaluation.get("models", {}).items():
        views = m.get("views", {})
        gap = (m.get("zooming_gap") or {}).get("gap")
        lines.append(f"| {label} | {pct(views.get('global', {}).get('accuracy'))} | {pct(views.get('regional', {}).get('accuracy'))} "
                     f"| {pct(gap)} | {m.get('n_items', 0)} |")
    return [*lines, ""]


def write_report(out_dir: str, summary: dict, eval_report: str | None = None) -> str:
    """Write ``report.md`` and its plots under ``out_dir``; return the report's path."""
    fs, root = url_to_fs(out_dir)
    fs.makedirs(f"{root}/plots", exist_ok=True)
    dist = summary["distillation"]
    lines = ["# R2I run report", ""]
    lines += ["## Data synthesis", "", *_synthesis_section(summary["synthesis"])]
    lines += ["## Distillation", "", f"- optimizer steps: {dist['steps']}; final loss: {dist['final_loss']}",
              f"- rows skipped by the trainer: {_nonzero(dist['dropped'])}", f"- exported model: `{dist['export_dir']}`", ""]
    if dist["history"]:
        plot_training(dist["history"], fs, f"{root}/plots/training.png")
        lines += ["![training curve](plots/training.png)", ""]
    lines += ["## Evaluation: base vs distilled student", "", *_evaluation_section(summary["evaluation"])]
    plot_dimensions(summary["evaluation"].get("models", {}), fs, f"{root}/plots/before_after.png")
    lines += ["![before and after](plots/before_after.png)", ""]
    if eval_report:
        lines += [f"Full evaluation report (per-dimension tables, judge rules, latency): `{eval_report}`", ""]
    timings = summary.get("timings", {})
    lines += ["## Timings", "", *[f"- {k}: {v:.1f}" for k, v in timings.items()], ""]
    lines += [f"Ray cluster: {summary['ray']['nodes']} node(s), resources {summary['ray']['resources']}", ""]
    path = f"{root}/report.md"
    with fs.open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path if "://" not in out_dir else f"{out_dir.rstrip('/')}/report.md"
