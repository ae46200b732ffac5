"""The chain and evaluation reports from small hand-made metrics (no Ray): caveat, units, distinct plots."""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from zwz_ray.chain_report import SECTIONS, ReportInput, render, write_report
from zwz_ray.eval import report
from zwz_ray.eval.metrics import compute_metrics


def predictions(correct: dict[tuple[str, str], bool]) -> pd.DataFrame:
    """One model's predictions: (item id, view) -> correct; items 'a' and 'b' are color, 'c' structure."""
    rows = [{"id": i, "view": v, "correct": ok, "category": "structure" if i == "c" else "color", "is_mcq": i == "a",
             "rule": "exact" if ok else "normalized", "latency_s": 0.1, "completion_tokens": 4} for (i, v), ok in correct.items()]
    return pd.DataFrame(rows)


BASE = {("a", "global"): False, ("a", "regional"): False, ("b", "global"): False, ("b", "regional"): True,
        ("c", "global"): False, ("c", "regional"): False}
DISTILLED = {("a", "global"): True, ("a", "regional"): True, ("b", "global"): False, ("b", "regional"): True,
             ("c", "global"): False, ("c", "regional"): True}


def summary(student: str = "tiny:qwen2_5_vl", problems: list | None = None) -> dict:
    models = {"base": compute_metrics(predictions(BASE)), "distilled": compute_metrics(predictions(DISTILLED))}
    return {
        "config": {"distill": {"student": student}, "synth": {"models": {"teacher": {"model": student}}}},
        "synthesis": {"images": {"in": 6, "with_kept_rows": 2}, "kept_rows": 4, "drop_rows": 29,
                      "stages": {"proposal": {"rows_in": 6, "rows_out": 5, "dropped": {"no_objects": 1}, "busy_s": 1.23}},
                      "reconciliation_problems": problems or []},
        "distillation": {"steps": 2, "final_loss": 5.958832263946533, "dropped": {"too_long": 0},
                         "export_dir": "/out/distill/model",
                         "history": [{"step": 1, "loss": 6.849757671356201, "lr": 1e-4}, {"step": 2, "loss": 5.958832263946533}]},
        "evaluation": {"models": models},
        "timings": {"synthesis_s": 63.6},
        "ray": {"nodes": 1, "resources": {"CPU": 4.0}},
    }


def test_tiny_models_put_the_random_weights_caveat_first(tmp_path):
    path = write_report(str(tmp_path), summary())
    text = open(path).read()
    lines = text.splitlines()
    assert lines[0] == "# R2I run report"
    caveat = text.index("**Random weights.**")
    assert caveat < text.index("## Data synthesis")
    assert "`tiny:qwen2_5_vl`" in text and "about 0 %" in text
    assert "the synthesis accounting reconciles" in text and "every stage ran end to end" in text


def test_caveat_reports_accounting_that_does_not_reconcile(tmp_path):
    fs = fsspec.filesystem("file")
    text = render(ReportInput(summary(problems=["proposal: 6 in != 5 out + 0 dropped"]), fs, str(tmp_path)))
    assert "does NOT reconcile: proposal: 6 in != 5 out + 0 dropped" in text


def test_real_models_get_no_caveat_and_units_are_stated(tmp_path):
    fs = fsspec.filesystem("file")
    (tmp_path / "plots").mkdir()
    text = render(ReportInput(summary(student="Qwen/Qwen2.5-VL-7B-Instruct"), fs, str(tmp_path)))
    assert "Random weights" not in text
    assert "| model | global acc (%) | regional acc (%) | zooming gap (pts) | items |" in text
    assert "| distilled | 33.33 | 100.00 | +66.67 | 3 |" in text
    assert "loss 6.8498 (first step) -> 5.9588 (last)" in text and "5.958832" not in text


def test_sections_are_an_ordered_list_a_new_one_slots_in(tmp_path):
    fs = fsspec.filesystem("file")
    (tmp_path / "plots").mkdir()
    extra = [*SECTIONS[:2], lambda r: ["## Extra section", ""], *SECTIONS[2:]]
    text = render(ReportInput(summary(), fs, str(tmp_path)), extra)
    assert text.index("## Data synthesis") < text.index("## Extra section") < text.index("## Distillation")


def test_before_after_plot_differs_from_the_per_dimension_plot(tmp_path):
    s = summary()
    write_report(str(tmp_path), s)
    fs = fsspec.filesystem("file")
    report.plot_dimensions(s["evaluation"]["models"], fs, str(tmp_path / "per_dimension.png"))
    before_after = (tmp_path / "plots" / "before_after.png").read_bytes()
    per_dimension = (tmp_path / "per_dimension.png").read_bytes()
    assert before_after[:8] == b"\x89PNG\r\n\x1a\n" and before_after != per_dimension
    # Two panels (global, regional) side by side: wider than tall, unlike a single-axis chart.
    width, height = Image.open(io.BytesIO(before_after)).size
    assert width > 1.5 * height


def _pixels(path, rgb: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return np.all(np.abs(img - np.array(rgb)) <= tol, axis=-1)


def test_zero_bars_are_marked(tmp_path):
    fs = fsspec.filesystem("file")
    zero = {"base": compute_metrics(predictions({k: False for k in BASE}))}
    report.plot_dimensions(zero, fs, str(tmp_path / "zero.png"))
    img = np.asarray(Image.open(tmp_path / "zero.png").convert("RGB")).astype(int)
    # Matplotlib's first colour (tab:blue, 31,119,180) appears only through the zero stubs and the legend patch.
    blue = np.all(np.abs(img - np.array([31, 119, 180])) <= 30, axis=-1)
    rows = np.nonzero(blue.any(axis=1))[0]
    assert blue.sum() > 50 and rows.max() > 0.6 * img.shape[0]  # a mark low in the plot, on the zero line


@pytest.mark.parametrize("question", ["What colour is the small sign above the door?"])
def test_coverage_heatmap_draws_box_question_and_colour_bar(tmp_path, question):
    fs = fsspec.filesystem("file")
    image = Image.new("RGB", (200, 160), (120, 120, 120))
    grid = np.random.default_rng(0).random((4, 5))
    report.plot_heatmap(image, grid, [40, 30, 120, 90], "base item 1", fs, str(tmp_path / "with.png"), question=question)
    box = _pixels(tmp_path / "with.png", (255, 0, 255))
    assert box.sum() > 200  # the magenta outline of the question's box
    ys, xs = np.nonzero(box)
    assert xs.max() - xs.min() > 100 and ys.max() - ys.min() > 80  # a rectangle, not a speck
    with_size = Image.open(tmp_path / "with.png").size
    report.plot_heatmap(image, grid, [40, 30, 120, 90], "base item 1", fs, str(tmp_path / "without.png"))
    without_size = Image.open(tmp_path / "without.png").size
    assert with_size[1] > without_size[1]  # the question's text adds a line under the image


def test_eval_report_states_units_and_caveat():
    metrics = {"base": compute_metrics(predictions(BASE))}
    text = report.render_markdown("zoombench_demo", metrics, {}, {"per-dimension accuracy": "plots/per_dimension.png"},
                                  None, ["tiny:qwen2_5_vl"])
    assert text.index("# Evaluation on zoombench_demo") < text.index("**Random weights.**") < text.index("## Summary")
    assert "| model | protocol | items | global (%) | regional (%) | zooming gap (pts) | s / item |" in text
    assert "Random weights" not in report.render_markdown("zb", metrics, {}, {}, None, ["Qwen/Qwen2.5-VL-7B-Instruct"])


def test_chain_report_states_the_grpo_reward(tmp_path):
    from zwz_ray.chain_report import ReportInput, distillation_section

    history = [{"step": 1, "loss": 0.0, "reward_mean": 0.25, "zero_variance_groups": 1.0},
               {"step": 2, "loss": 0.1, "reward_mean": 0.5, "zero_variance_groups": 0.0}]
    summary = {"distillation": {"steps": 2, "final_loss": 0.1, "dropped": {}, "export_dir": "/x", "history": history}}
    import fsspec

    text = "\n".join(distillation_section(ReportInput(summary, fsspec.filesystem("file"), str(tmp_path))))
    assert "GRPO reward (mean of the step's responses): 0.250 (first step) -> 0.500 (last)" in text
    assert "groups with equal rewards: 50% of all" in text


def test_chain_report_tables_the_cost_per_kept_row(tmp_path):
    from zwz_ray.chain_report import synthesis_section
    from zwz_ray.synth.cost import cost_per_kept_row

    counts = {"calls": 30, "samples": 60, "prompt_tokens": 24000, "completion_tokens": 3600, "errors": 0, "engine_s": 5.0, "loads": 2}
    models = {"teacher": counts, "api": {**counts, "loads": 0}, "sam": {"calls": 4, "samples": 12}}
    s = summary()
    s["synthesis"]["cost_per_kept_row"] = cost_per_kept_row({"kept_rows": 4, "models": models}, {"teacher": 0.5, "api": None}, {"sam"})
    text = "\n".join(synthesis_section(ReportInput(s, fsspec.filesystem("file"), str(tmp_path))))
    assert "Model cost per kept row (4 kept rows; GPU-s = engine seconds x GPUs of one replica" in text
    assert "| model | calls | prompt tokens | generated tokens | GPU-s | loads |" in text
    assert "| teacher | 7.5 | 6,000.0 | 900.0 | 0.62 | 2 |" in text  # 5 s x 0.5 GPU / 4 rows = 0.625
    assert "| api | 7.5 | 6,000.0 | 900.0 | - | 0 |" in text
    assert "| sam (not metered) | 1.0 | - | - | - | 0 |" in text
    assert "| all metered models | 15.0 | 12,000.0 | 1,800.0 | 0.62 |  |" in text
    assert text.index("| stage | rows in") < text.index("Model cost per kept row")
    s["synthesis"]["cost_per_kept_row"] = cost_per_kept_row({"kept_rows": 0, "models": models}, {"teacher": 0.5}, {"sam"})
    text = "\n".join(synthesis_section(ReportInput(s, fsspec.filesystem("file"), str(tmp_path))))
    assert "| teacher | - | - | - | - | 2 |" in text and "No row was kept, so there is nothing to divide by" in text
    del s["synthesis"]["cost_per_kept_row"]  # stats.json of an older run: no table, nothing breaks
    assert "Model cost" not in "\n".join(synthesis_section(ReportInput(s, fsspec.filesystem("file"), str(tmp_path))))
