"""The suite's summary: one row per model, one column per benchmark (and view), as the paper's tables."""

from __future__ import annotations

import io

import pandas as pd

from zwz_ray.eval.benchmarks import scores_markdown

VIEW_NAMES = {"global": "", "regional": " (crop)"}


def _headline(result: dict, label: str, view: str) -> float | None:
    """The benchmark's own headline for one model and view; plain accuracy for a benchmark read without a preset."""
    scores = result["scores"].get(label, {}).get(view)
    if scores is not None:
        return scores.get("headline")
    return result["models"].get(label, {}).get("views", {}).get(view, {}).get("accuracy")


def summary_table(results: dict, labels: list[str]) -> pd.DataFrame:
    """Headline scores in % (NaN where a model has none); a benchmark answered on crops gets a second column."""
    columns = {}
    for result in results.values():
        views = sorted({v for m in result["models"].values() for v in m.get("views", {})}, key=lambda v: v != "global")
        for view in views or ["global"]:
            name = result["name"] + VIEW_NAMES.get(view, f" ({view})")
            columns[name] = [_headline(result, label, view) for label in labels]
    table = pd.DataFrame(columns, index=pd.Index(labels, name="model"), dtype=float) * 100
    table["mean"] = table.mean(axis=1, skipna=True)
    return table


def _plot(table: pd.DataFrame, fs, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [c for c in table.columns if c != "mean"]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cols) * max(1, len(table)) / 2 + 2), 4))
    width = 0.8 / max(1, len(table))
    for k, (label, row) in enumerate(table.iterrows()):
        bars = ax.bar(np.arange(len(cols)) + k * width, row[cols].fillna(0).to_numpy(), width, label=str(label))
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(np.arange(len(cols)) + width * (len(table) - 1) / 2, cols, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Benchmark suite: each benchmark's own headline score")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with fs.open(path, "wb") as fh:
        fh.write(buf.getvalue())


def _cell(v: float) -> str:
    return "-" if v != v else f"{v:.2f}"


def render(table: pd.DataFrame, results: dict, runs: dict, judge: str | None) -> str:
    header = ["model", *table.columns]
    lines = ["# Benchmark suite", "",
             "Each benchmark scored with its own rule and reported with its headline metric (%): HR-Bench the "
             "cycle-averaged accuracy, MME-RealWorld Avg, CV-Bench 2D the ADE20K/COCO mean, CountQA exact count, "
             "ColorBench perception + reasoning; `(crop)` is the regional view. "
             f"Judge: rules{' + ' + judge if judge else ' only'}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(label)] + [_cell(v) for v in row]) + " |" for label, row in table.iterrows()]
    lines += ["", "![summary](plots/summary.png)", "", "## Runs", "", "| model | new answers | reused | failed | seconds | answers / s |",
              "|---|---|---|---|---|---|"]
    for label, r in runs.items():
        new = sum(r.requests.values())
        lines.append(f"| {label} | {new} | {sum(r.previously_answered.values())} | {sum(r.failed.values())} | {r.seconds:.1f} | "
                     f"{new / r.seconds if r.seconds and new else 0:.2f} |")
    lines.append("")
    for key, result in results.items():
        lines += scores_markdown(f"{result['name']} (`{key}/metrics.json`)", result["scores"])
    return "\n".join(lines)


def write_summary(table: pd.DataFrame, results: dict, runs: dict, cfg, fs, root: str) -> tuple[str, str, str]:
    """report.md, summary.csv and plots/summary.png under ``root``; returns their paths."""
    fs.makedirs(f"{root}/plots", exist_ok=True)
    csv_path, plot_path, report_path = f"{root}/summary.csv", f"{root}/plots/summary.png", f"{root}/report.md"
    with fs.open(csv_path, "w", encoding="utf-8") as fh:
        fh.write(table.round(2).to_csv())
    _plot(table, fs, plot_path)
    with fs.open(report_path, "w", encoding="utf-8") as fh:
        fh.write(render(table, results, runs, cfg.judge.label if cfg.judge else None))
    return report_path, csv_path, plot_path
