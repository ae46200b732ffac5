"""``report.md`` and its plots: per-dimension accuracy, zooming gap, latency, attention heatmaps.

The markdown is an ordered list of sections (``SECTIONS``), each a function of ``EvalReportInput``
returning its lines; the chain report (``zwz_ray.chain_report``) reuses the plots and the
random-weights check. Accuracy is in %, gaps in percentage points.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from zwz_ray.eval.metrics import VIEWS, pct  # noqa: E402
from zwz_ray.models import TINY_PREFIX  # noqa: E402

BOX_COLOR = "#ff00ff"  # the question's box on heatmaps: magenta never occurs in the "jet" colour map


def random_weight_models(config: object) -> list[str]:
    """Every ``tiny:`` model reference anywhere in a (nested) config dict or list, sorted."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif isinstance(node, str) and node.startswith(TINY_PREFIX):
            found.add(node)

    walk(config)
    return sorted(found)


def random_weights_caveat(models: list[str]) -> list[str]:
    """The markdown note for reports whose models have random weights (empty when none has)."""
    if not models:
        return []
    names = ", ".join(f"`{m}`" for m in models)
    return [f"> **Random weights.** {names} are tiny random-weight models: accuracy is expected to be about 0 % and "
            "says nothing about the method. The run shows that every stage ran on the real engines and that the "
            "metrics add up.", ""]


def save_png(fig, fs, path: str) -> None:
    """Write a matplotlib figure as PNG through fsspec (local or remote) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with fs.open(path, "wb") as fh:
        fh.write(buf.getvalue())


def mark_zero_bars(ax, bars) -> None:
    """A zero-height bar draws nothing: put a thick stub in the bar's colour on the axis and a "0" above it."""
    for bar in bars:
        if bar.get_height() == 0:
            x0, width = bar.get_x(), bar.get_width()
            ax.plot([x0, x0 + width], [0, 0], color=bar.get_facecolor(), lw=4, solid_capstyle="butt", clip_on=False)
            ax.annotate("0", (x0 + width / 2, 0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=6)


def _dims(metrics: dict) -> list[str]:
    return sorted({d for m in metrics.values() for d in m["dimensions"]}, key=lambda d: (d != "all", d))


def _accuracy(m: dict, dim: str, view: str) -> float:
    return 100 * (m["dimensions"].get(dim, {}).get(view, {}).get("accuracy") or 0)


def plot_dimensions(metrics: dict, fs, path: str) -> None:
    """Grouped bars: accuracy per dimension, one bar per (model, view)."""
    dims = _dims(metrics)
    series = [(label, view) for label, m in metrics.items() for view in VIEWS if view in m["views"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(dims) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (label, view) in enumerate(series):
        values = [_accuracy(metrics[label], d, view) for d in dims]
        bars = ax.bar(np.arange(len(dims)) + k * width, values, width, label=f"{label} ({view})",
                      hatch="//" if view == "regional" else None, alpha=0.9)
        labels = [f"{v:.0f}" if v else "" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=6, padding=1)
        mark_zero_bars(ax, bars)
    ax.set_xticks(np.arange(len(dims)) + width * (len(series) - 1) / 2, dims)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy per dimension: global (full image) vs regional (crop)")
    ax.legend(fontsize=7, ncol=2)
    save_png(fig, fs, path)


def plot_before_after(metrics: dict, base: str, after: str, fs, path: str) -> None:
    """One panel per view: base vs distilled accuracy per dimension, each pair labelled with the difference."""
    dims = _dims({k: metrics[k] for k in (base, after)})
    views = [v for v in VIEWS if v in metrics[base]["views"] or v in metrics[after]["views"]] or list(VIEWS)
    fig, axes = plt.subplots(1, len(views), figsize=(max(7, 1.4 * len(dims) * len(views)), 4.2), sharey=True, squeeze=False)
    x = np.arange(len(dims))
    for ax, view in zip(axes[0], views):
        before = [_accuracy(metrics[base], d, view) for d in dims]
        later = [_accuracy(metrics[after], d, view) for d in dims]
        for values, offset, label, color in ((before, -0.2, base, "tab:gray"), (later, 0.2, after, "tab:green")):
            bars = ax.bar(x + offset, values, 0.4, label=label, color=color)
            mark_zero_bars(ax, bars)
        for i, (b, a) in enumerate(zip(before, later)):
            lift = 12 if max(a, b) == 0 else 3  # above the "0" marks of zero bars
            ax.annotate(f"{a - b:+.1f}", (i, max(a, b)), xytext=(0, lift), textcoords="offset points", ha="center",
                        fontsize=8, color="tab:green" if a > b else ("tab:red" if a < b else "black"))
        ax.set_xticks(x, dims, rotation=15, fontsize=8)
        ax.set_title(f"{view} view")
        ax.set_ylim(0, 110)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Before and after distillation: {base} vs {after} (labels: {after} - {base}, in points)", fontsize=10)
    save_png(fig, fs, path)


def plot_gap(metrics: dict, fs, path: str) -> None:
    """Per model: paired global and regional accuracy, and the zooming gap between them."""
    labels = [label for label, m in metrics.items() if m.get("zooming_gap")]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 4))
    x = np.arange(len(labels))
    g = [100 * metrics[label]["zooming_gap"]["global"] for label in labels]
    r = [100 * metrics[label]["zooming_gap"]["regional"] for label in labels]
    mark_zero_bars(ax, ax.bar(x - 0.2, g, 0.4, label="global view"))
    mark_zero_bars(ax, ax.bar(x + 0.2, r, 0.4, label="regional view"))
    for i, (a, b) in enumerate(zip(g, r)):
        ax.annotate(f"gap {b - a:+.1f}", (i, max(a, b)), xytext=(0, 12 if max(a, b) == 0 else 3),
                    textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(x, labels, rotation=15, fontsize=8)
    ax.set_ylabel("accuracy on paired items (%)")
    ax.set_ylim(0, 112)  # room for the gap labels above 100 % bars
    ax.set_title("Zooming gap (regional - global)")
    ax.legend(fontsize=8)
    save_png(fig, fs, path)


def plot_latency(predictions: dict, fs, path: str) -> None:
    """Box plot of seconds per item, per (model, view)."""
    data, names = [], []
    for label, df in predictions.items():
        for view in VIEWS:
            part = df[(df["view"] == view) & (df["rule"] != "error")]["latency_s"].dropna()
            if len(part):
                data.append(part.astype(float).to_numpy())
                names.append(f"{label}\n{view}")
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names)), 4))
    if data:
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=7)
    ax.set_ylabel("seconds per item (batch time / batch size)")
    ax.set_title("Latency per item")
    save_png(fig, fs, path)


def plot_heatmap(image: Image.Image, grid: np.ndarray, box: list[float], title: str, fs, path: str,
                 question: str = "") -> None:
    """The attention grid stretched over the image, the question's box, the question and a colour bar."""
    fig, ax = plt.subplots(figsize=(7, 6 * image.height / max(image.width, 1) + 0.8))
    ax.imshow(image)
    shown = ax.imshow(grid, cmap="jet", alpha=0.45, extent=(0, image.width, image.height, 0), interpolation="nearest")
    x1, y1, x2, y2 = box
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=BOX_COLOR, linewidth=2.5,
                               label="question's box"))
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    # The bar shows the colour map at full strength (the overlay itself is translucent).
    scale = plt.cm.ScalarMappable(norm=shown.norm, cmap=shown.cmap)
    fig.colorbar(scale, ax=ax, fraction=0.046, pad=0.02, label="share of attention per image patch")
    ax.set_title(title, fontsize=8)
    if question:
        text = textwrap.fill("Q: " + textwrap.shorten(question, 300), 90)
        ax.text(0.5, -0.02, text, transform=ax.transAxes, ha="center", va="top", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    save_png(fig, fs, path)


# --------------------------------------------------------------------------- markdown


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _view_cell(block: dict, view: str) -> str:
    v = block.get(view)
    return f"{pct(v['accuracy'])} ({v['correct']}/{v['n']})" if v else "-"


@dataclass
class EvalReportInput:
    benchmark: str
    metrics: dict  # per model label, from compute_metrics
    coverage: dict = field(default_factory=dict)  # per model label, from the coverage pass
    plots: dict[str, str] = field(default_factory=dict)  # title -> path relative to report.md
    judge: str | None = None
    models: list[str] = field(default_factory=list)  # the evaluated model references (for the random-weights note)


def _header_section(r: EvalReportInput) -> list[str]:
    judge = f"rules + {r.judge}" if r.judge else "rules only (undecided counts as incorrect)"
    return [f"# Evaluation on {r.benchmark}", "", *random_weights_caveat(random_weight_models(r.models)),
            "Dual-view protocol: every question is asked on the full image (global view) and on the crop of its "
            "region (regional view). Zooming gap = regional - global accuracy on items with both views, in percentage "
            f"points. Accuracy in % (correct/asked). Judge: {judge}.", ""]


def _summary_section(r: EvalReportInput) -> list[str]:
    rows = []
    for label, m in r.metrics.items():
        gap = m.get("zooming_gap")
        lat = m["latency"].get("global", {}).get("latency_s", {})
        rows.append([label, m.get("protocol", "-"), str(m["n_items"]), _view_cell(m["views"], "global"), _view_cell(m["views"], "regional"),
                     f"{100 * gap['gap']:+.2f}" if gap else "-", f"{lat.get('mean', float('nan')):.3f}" if lat else "-"])
    header = ["model", "protocol", "items", "global (%)", "regional (%)", "zooming gap (pts)", "s / item"]
    return ["## Summary", "", *_table(header, rows), ""]


def _coverage_section(r: EvalReportInput) -> list[str]:
    if not r.coverage:
        return []
    rows = [[label, str(c.get("n", 0)), f"{c.get('mean', 0):.3f}", f"{c.get('median', 0):.3f}",
             f"{c.get('mean_box_area', 0):.3f}", str(c.get("layer", "-"))] for label, c in r.coverage.items()]
    return ["## Attention coverage", "", "Share of the attention (last prompt token -> image tokens) inside the "
            "question's box, as a fraction; `uniform` is what evenly spread attention would score (the box area).", "",
            *_table(["model", "items", "mean", "median", "uniform", "layer"], rows), ""]


def _plots_section(r: EvalReportInput) -> list[str]:
    return ["## Plots", "", *[f"![{name}]({path})" for name, path in r.plots.items()], ""]


def render_markdown(benchmark: str, metrics: dict, coverage: dict, plots: dict[str, str], judge: str | None,
                    models: list[str] | None = None) -> str:
    r = EvalReportInput(benchmark, metrics, coverage or {}, plots, judge, list(models or []))
    lines: list[str] = []
    for section in SECTIONS:
        lines += section(r)
    return "\n".join(lines)


def _dimension_section(r: EvalReportInput) -> list[str]:
    metrics = r.metrics
    dims = _dims(metrics)
    header = ["dimension"] + [f"{label} {view}" for label in metrics for view in VIEWS]
    rows = [[d] + [_view_cell(metrics[label]["dimensions"].get(d, {}), view) for label in metrics for view in VIEWS]
            for d in dims]
    return ["## Per dimension (accuracy %, correct/asked)", ""] + _table(header, rows) + [""]


def _kind_section(r: EvalReportInput) -> list[str]:
    metrics = r.metrics
    header = ["questions"] + [f"{label} {view}" for label in metrics for view in VIEWS]
    rows = [[kind] + [_view_cell(metrics[label]["kinds"].get(kind, {}), view) for label in metrics for view in VIEWS]
            for kind in ("mcq", "open")]
    return ["## Multiple choice vs open (accuracy %, correct/asked)", ""] + _table(header, rows) + [""]


def _rule_section(r: EvalReportInput) -> list[str]:
    metrics = r.metrics
    rules = sorted({r for m in metrics.values() for v in m["rules"].values() for r in v})
    header = ["model", "view"] + rules
    rows = [[label, view] + [str(m["rules"][view].get(r, 0)) for r in rules] for label, m in metrics.items()
            for view in VIEWS if view in m["rules"]]
    return ["## Which rule decided", ""] + _table(header, rows) + [""]


# --------------------------------------------------------------------------- zoom-agent baseline


def agent_section(metrics: dict, fs, root: str, plot: str = "plots/agent_speed.png") -> list[str]:
    """Single-pass vs zoom agent per model (table + accuracy-vs-seconds plot written under ``root``); [] without agents."""
    agents = {label: m["agent"] for label, m in metrics.items() if m.get("agent")}
    if not agents:
        return []

    def num(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [[label, str(a["n"]), pct(a["single_accuracy"]), pct(a["accuracy"]), num(a["single_items_per_s"], ".2f"),
             num(a["agent_items_per_s"], ".2f"), num(a["latency_ratio"], ".1f") + ("x" if a["latency_ratio"] else ""),
             num(a["mean_turns"], ".2f"), num(a["mean_tool_calls"], ".2f"), f"{a['malformed_calls']}/{a['tool_calls']}",
             num(a["single_tokens"], ".0f"), num(a["agent_tokens"], ".0f")] for label, a in agents.items()]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, a) in enumerate(agents.items()):
        color = f"C{k}"
        points = [(a[f"{mode}_s_per_item"], a[acc]) for mode, acc in (("single", "single_accuracy"), ("agent", "accuracy"))]
        if any(x is None or y is None for x, y in points):
            continue
        (x0, y0), (x1, y1) = [(x, 100 * y) for x, y in points]
        ax.plot([x0, x1], [y0, y1], color=color, linestyle=":", linewidth=1)
        ax.scatter([x0], [y0], color=color, marker="o", label=f"{label} single pass")
        ax.scatter([x1], [y1], color=color, marker="s", label=f"{label} zoom agent")
        if a["latency_ratio"]:
            ax.annotate(f"{a['latency_ratio']:.1f}x the time", (x1, y1), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=7, color=color)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FormatStrFormatter("%.3g")  # seconds as numbers, not powers of ten
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_xlabel("seconds per item (log)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-4, 104)  # a point at 0 or 100 % stays visible
    ax.set_title("Single pass vs zoom agent: accuracy against cost")
    ax.legend(fontsize=7)
    fs.makedirs(f"{root}/plots", exist_ok=True)
    save_png(fig, fs, f"{root}/{plot}")
    header = ["model", "items", "single acc", "agent acc", "single items/s", "agent items/s", "latency ratio", "turns",
              "tool calls", "malformed", "single tokens/item", "agent tokens/item"]
    return ["## Single pass vs zoom agent", "",
            "The zoom agent (thinking with images) sees the full image and may call `image_zoom_in_tool` before it "
            "answers; single pass = the global view. Same items, same judge. Seconds per item: engine time shared by "
            "the items of each call (the agent: summed over its turns, plus its crops); latency ratio = agent / single.",
            ""] + _table(header, rows) + ["", f"![single pass vs zoom agent]({plot})", ""]


Section = Callable[[EvalReportInput], list[str]]
SECTIONS: list[Section] = [_header_section, _summary_section, _dimension_section, _kind_section, _rule_section,
                           _coverage_section, _plots_section]
