"""The chain's ``report.md``: data statistics, training curves, before/after accuracy by view and dimension."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from fsspec.core import url_to_fs  # noqa: E402

from zwz_ray.eval.metrics import pct  # noqa: E402

VIEWS = ("global", "regional")


def _save(fig, fs, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with fs.open(path, "wb") as fh:
        fh.write(buf.getvalue())


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
    _save(fig, fs, path)


def plot_before_after(evaluation: dict, fs, path: str) -> None:
    """Accuracy per dimension for each evaluated model and view."""
    models = evaluation.get("models", {})
    dims = sorted({d for m in models.values() for d in m.get("dimensions", {})}, key=lambda d: (d != "all", d))
    series = [(label, view) for label in models for view in VIEWS if view in models[label].get("views", {})]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(dims) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (label, view) in enumerate(series):
        values = [100 * (models[label]["dimensions"].get(d, {}).get(view, {}).get("accuracy") or 0) for d in dims]
        ax.bar(np.arange(len(dims)) + k * width, values, width, label=f"{label} ({view})",
               hatch="//" if view == "regional" else None)
    ax.set_xticks(np.arange(len(dims)) + width * (len(series) - 1) / 2, dims, rotation=15)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Before / after distillation, by dimension and view")
    ax.legend(fontsize=7)
    _save(fig, fs, path)


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
              f"- rows skipped by the trainer: {dist['dropped'] or 'none'}", f"- exported model: `{dist['export_dir']}`", ""]
    if dist["history"]:
        plot_training(dist["history"], fs, f"{root}/plots/training.png")
        lines += ["![training curve](plots/training.png)", ""]
    lines += ["## Evaluation: base vs distilled student", "", *_evaluation_section(summary["evaluation"])]
    plot_before_after(summary["evaluation"], fs, f"{root}/plots/before_after.png")
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
