"""Dual-view metrics on a ZoomBench-layout fixture with known predictions (no model, no Ray)."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from zwz_ray.eval.config import BenchmarkConfig
from zwz_ray.eval.items import explode_views
from zwz_ray.eval.loaders import open_benchmark
from zwz_ray.eval.metrics import compute_metrics
from zwz_ray.eval.stages import apply_rules
from zwz_ray.eval.writers import write_zoombench

MCQ = "{q}\n(A) 2\n(B) 3\n(C) blue\n(D) red\nAnswer with the option's letter."

# id, category, question, answer, has crop, global response, regional response
ITEMS = [
    (0, "counting", MCQ.format(q="How many dots?"), "B", True, "<answer>A</answer>", "<answer>B</answer>"),
    (1, "counting", "How many cars?", "5", True, "<answer>five</answer>", "<answer>5</answer>"),
    (2, "color", MCQ.format(q="What colour?"), "C", True, "<answer>(C)</answer>", "<answer>red</answer>"),
    (3, "ocr", "What word is on the sign?", "EXIT", True, "", "<answer>exit</answer>"),
    (4, "ocr", "What word is on the awning?", "CAFE", False, "Answer: cafe", None),
    (5, None, MCQ.format(q="Which?"), "A", True, "<answer>A</answer>", "The answer is (A)."),
]


def _image(colour) -> Image.Image:
    return Image.new("RGB", (64, 48), colour)


@pytest.fixture()
def predictions(tmp_path) -> pd.DataFrame:
    rows = [{"id": i, "question": q, "answer": a, "image": _image((10 * i, 0, 0)), "crop": _image((0, 10 * i, 0)) if crop else None,
             "bbox": [4, 4, 20, 20], "category": cat} for i, cat, q, a, crop, _, _ in ITEMS]
    path = write_zoombench(str(tmp_path / "bench.parquet"), rows)
    bench = open_benchmark(BenchmarkConfig(path=path))
    items = pd.concat(list(bench.iter_items(batch_size=4)), ignore_index=True)
    views = explode_views(items, ["global", "regional"])
    responses = {(str(i), "global"): g for i, *_, g, _ in ITEMS} | {(str(i), "regional"): r for i, *_, r in ITEMS}
    views["response"] = [responses[(i, v)] for i, v in zip(views["id"], views["view"])]
    views["error"] = None
    views["latency_s"] = 0.5
    views["completion_tokens"] = 10
    return apply_rules(views, model="m")


def test_rows_and_rules(predictions):
    assert len(predictions) == 11  # 6 global + 5 regional (item 4 has no crop)
    rule = {(r.id, r.view): r.rule for r in predictions.itertuples()}
    assert rule[("0", "global")] == "mcq_letter"
    assert rule[("1", "global")] == "normalized"
    assert rule[("2", "regional")] == "mcq_option_text"
    assert rule[("3", "global")] == "no_answer"
    assert rule[("4", "global")] == "normalized"
    assert rule[("5", "regional")] == "mcq_letter"


def test_view_accuracy_and_gap(predictions):
    m = compute_metrics(predictions)
    assert m["n_items"] == 6
    assert (m["views"]["global"]["correct"], m["views"]["global"]["n"]) == (4, 6)
    assert (m["views"]["regional"]["correct"], m["views"]["regional"]["n"]) == (4, 5)
    assert m["views"]["global"]["accuracy"] == pytest.approx(4 / 6)
    gap = m["zooming_gap"]
    assert gap["n_paired"] == 5
    assert gap["global"] == pytest.approx(3 / 5)
    assert gap["regional"] == pytest.approx(4 / 5)
    assert gap["gap"] == pytest.approx(0.2)
    assert (gap["fixed_by_zoom"], gap["lost_by_zoom"]) == (2, 1)


def test_per_dimension_uses_only_given_categories(predictions):
    dims = compute_metrics(predictions)["dimensions"]
    assert set(dims) == {"all", "counting", "color", "ocr"}
    assert (dims["counting"]["global"]["correct"], dims["counting"]["global"]["n"]) == (1, 2)
    assert (dims["counting"]["regional"]["correct"], dims["counting"]["regional"]["n"]) == (2, 2)
    assert (dims["color"]["global"]["accuracy"], dims["color"]["regional"]["accuracy"]) == (1.0, 0.0)
    assert (dims["ocr"]["global"]["correct"], dims["ocr"]["global"]["n"]) == (1, 2)
    assert dims["ocr"]["regional"]["n"] == 1
    assert dims["all"]["global"]["n"] == 6  # item 5 has no category: counted under "all" only


def test_mcq_open_split_rules_latency(predictions):
    m = compute_metrics(predictions)
    kinds = m["kinds"]
    assert (kinds["mcq"]["global"]["correct"], kinds["mcq"]["global"]["n"]) == (2, 3)
    assert (kinds["mcq"]["regional"]["correct"], kinds["mcq"]["regional"]["n"]) == (2, 3)
    assert (kinds["open"]["global"]["correct"], kinds["open"]["global"]["n"]) == (2, 3)
    assert (kinds["open"]["regional"]["correct"], kinds["open"]["regional"]["n"]) == (2, 2)
    assert m["rules"]["global"] == {"exact": 1, "mcq_letter": 2, "no_answer": 1, "normalized": 2}
    assert m["latency"]["global"]["latency_s"]["mean"] == pytest.approx(0.5)


def test_errors_count_as_incorrect(predictions):
    broken = predictions.copy()
    broken.loc[0, ["rule", "correct"]] = ["error", False]
    m = compute_metrics(broken)
    assert m["views"][broken.loc[0, "view"]]["errors"] == 1


def test_empty_predictions():
    assert compute_metrics(pd.DataFrame(columns=["id", "view"]))["n_items"] == 0
