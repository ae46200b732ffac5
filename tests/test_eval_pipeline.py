"""End to end on real Ray with tiny models: predictions, metrics, report, judge, coverage, resume."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from PIL import Image, ImageDraw

from zwz_ray.config import EngineConfig, ResourcesConfig, load_config
from zwz_ray.eval import EvalConfig, run_eval
from zwz_ray.eval.config import BenchmarkConfig, CoverageConfig, InferenceConfig, OutputConfig
from zwz_ray.eval.writers import write_zoombench

MODEL = "tiny:qwen2_5_vl"


def _rows(n: int, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        img = Image.new("RGB", (224, 168), (120, 130, 140))
        box = [20 + 10 * i, 30, 60 + 10 * i, 70]
        ImageDraw.Draw(img).rectangle(box, fill=(220, 30, 30))
        question = "What colour is the square?" if i % 2 else "What colour is the square?\n(A) red\n(B) blue"
        rows.append({"id": i, "question": question, "answer": "red" if i % 2 else "A", "image": img,
                     "crop": img.crop(box).resize((80, 80)) if i != start else None, "bbox": box,
                     "category": "color" if i % 3 else "structure"})
    return rows


def _config(bench: str, out: str, judge: bool = False, coverage: bool = False) -> EvalConfig:
    model = EngineConfig(model=MODEL, device="cpu", dtype="float32", resources=ResourcesConfig(batch_size=4))
    return EvalConfig(
        benchmark=BenchmarkConfig(path=bench),
        models=[model],
        judge=EngineConfig(model="tiny:text", device="cpu", dtype="float32") if judge else None,
        inference=InferenceConfig(max_tokens=6),
        coverage=CoverageConfig(enabled=coverage, layer=-1, max_items=2, heatmaps=1),
        output=OutputConfig(dir=out),
    )


@pytest.fixture(scope="module")
def first_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    bench = write_zoombench(str(root / "bench.parquet"), _rows(5))
    cfg = _config(bench, str(root / "out"), judge=True, coverage=True)
    return cfg, run_eval(cfg)


def test_outputs_exist(first_run):
    cfg, result = first_run
    out = cfg.output.dir
    preds = pd.read_parquet(os.path.join(out, "predictions", "tiny_qwen2_5_vl.parquet"))
    assert len(preds) == 9  # 5 global + 4 regional (the first item has no crop)
    assert set(preds.columns) >= {"id", "view", "response", "extracted", "verdict", "rule", "latency_s", "prompt_tokens"}
    assert preds["rule"].isin(["exact", "normalized", "mcq_letter", "mcq_option_text", "llm_judge", "no_answer",
                               "undecided"]).all()
    assert (preds["prompt_tokens"] > 0).all() and (preds["latency_s"] > 0).all()
    metrics = json.loads(open(os.path.join(out, "metrics.json")).read())
    m = metrics["models"][MODEL]
    assert m["views"]["global"]["n"] == 5 and m["views"]["regional"]["n"] == 4
    assert m["zooming_gap"]["n_paired"] == 4
    assert set(m["dimensions"]) == {"all", "color", "structure"}
    report = open(os.path.join(out, "report.md")).read()
    assert "Zooming gap" in report or "zooming gap" in report
    for name in ("per_dimension", "zooming_gap", "latency"):
        assert os.path.getsize(os.path.join(out, "plots", f"{name}.png")) > 1000
    assert result.runs[MODEL].requests == 9 and result.runs[MODEL].previously_answered == 0
    assert result.runs[MODEL].model_loads >= 1 and not result.runs[MODEL].skipped


def test_coverage_outputs(first_run):
    cfg, result = first_run
    cov = result.metrics["coverage"][MODEL]
    assert cov["n"] == 2 and cov["errors"] == 0 and 0 <= cov["mean"] <= 1
    assert len(cov["heatmaps"]) == 1 and os.path.exists(os.path.join(cfg.output.dir, cov["heatmaps"][0]))


def test_resume_sends_nothing_then_only_new_items(first_run):
    cfg, first = first_run
    before = pd.read_parquet(os.path.join(cfg.output.dir, "predictions", "tiny_qwen2_5_vl.parquet"))
    again = run_eval(_config(cfg.benchmark.path, cfg.output.dir, coverage=True))
    assert again.runs[MODEL].requests == 0 and again.runs[MODEL].previously_answered == 9
    # nothing new: the model is never loaded, the attention coverage of the first run is reused
    assert again.runs[MODEL].model_loads == 0 and again.runs[MODEL].skipped
    assert again.metrics["runs"][MODEL]["model_loads"] == 0
    cov, first_cov = again.metrics["coverage"][MODEL], first.metrics["coverage"][MODEL]
    assert cov["reused"] and not first_cov["reused"] and cov["mean"] == first_cov["mean"]
    assert again.metrics["models"][MODEL]["views"] == first.metrics["models"][MODEL]["views"]
    write_zoombench(cfg.benchmark.path, _rows(5) + _rows(2, start=5)[:2])  # the benchmark grows by two items
    grown = run_eval(_config(cfg.benchmark.path, cfg.output.dir))
    assert grown.runs[MODEL].requests == 3  # item 5 (no crop): 1 view, item 6: 2 views
    assert grown.runs[MODEL].model_loads >= 1 and not grown.runs[MODEL].skipped
    after = pd.read_parquet(os.path.join(cfg.output.dir, "predictions", "tiny_qwen2_5_vl.parquet"))
    assert len(after) == 12
    old = after.merge(before, on=["id", "view"], suffixes=("", "_before"))
    assert (old["response"] == old["response_before"]).all()


def test_every_config_file_loads():
    folder = os.path.join(os.path.dirname(__file__), "..", "configs", "evaluate")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert {"laptop.yaml", "cluster.yaml"} <= set(files)
    for name in files:
        path = os.path.join(folder, name)
        first = open(path).readline()
        assert first.startswith("# ") and "pipelines.evaluate" in first, f"{name} must start with the command that runs it"
        cfg = load_config(EvalConfig, path)
        assert cfg.models and cfg.output.dir


def test_generic_json_items_on_ray(ray_session, tmp_path):
    from zwz_ray.eval.loaders import open_benchmark

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    rows = [{"question": "How many?", "answer": 3, "image": "a.png", "category": "count"},
            {"question": "Which?", "answer": "B", "image": "a.png", "options": ["x", "y"]},
            {"question": "Missing?", "answer": "no", "image": "gone.png"}]
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    items = open_benchmark(BenchmarkConfig(path=str(tmp_path / "bench.json"))).dataset().to_pandas()
    items = items.sort_values("id").reset_index(drop=True)
    assert items["answer"].tolist() == ["3", "B", "no"] and items["is_mcq"].tolist() == [False, True, False]
    assert list(items["image_size"][0]) == [32, 32] and items["image_error"][2].startswith("not_found")


LAPTOP = os.path.join(os.path.dirname(__file__), "..", "configs", "evaluate", "laptop.yaml")


def test_cli_reports_a_bad_benchmark(tmp_path, capsys):
    from pipelines.evaluate import main

    bad = tmp_path / "bench.parquet"
    bad.write_bytes(b"PAR1 garbage")
    code = main(["--config", LAPTOP, "--set", f"benchmark.path={bad}", "--set", f"output.dir={tmp_path / 'out'}"])
    assert code == 2 and "cannot read benchmark file" in capsys.readouterr().err


@pytest.mark.slow
def test_laptop_config_end_to_end(ray_session, tmp_path, capsys):
    from pipelines.evaluate import main

    code = main(["--config", LAPTOP, "--set", f"benchmark.path={tmp_path / 'demo.parquet'}", "--set", "benchmark.fixture_items=4",
                 "--set", f"output.dir={tmp_path / 'out'}", "--set", "coverage.max_items=2"])
    out = capsys.readouterr().out
    assert code == 0 and "tiny:qwen2_5_vl: global" in out and "tiny:qwen3_vl: global" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tiny:qwen2_5_vl", "tiny:qwen3_vl"} and metrics["judge"] == "tiny:text"
    assert (tmp_path / "out" / "report.md").exists()


def test_judge_dataset_splits_many_undecided_rows(ray_session):
    """More undecided rows than one judge batch: the dataset is one block per batch (builds lazily)."""
    import pandas as pd

    from zwz_ray.config import EngineConfig, ResourcesConfig
    from zwz_ray.eval.stages import judge_dataset

    rows = pd.DataFrame({"id": [str(i) for i in range(40)], "response": ["x"] * 40})
    judge = EngineConfig(model="tiny:text", resources=ResourcesConfig(batch_size=16))
    ds = judge_dataset(rows, judge, max_tokens=8)
    assert ds is not None
