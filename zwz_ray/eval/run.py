"""``run_eval``: the whole evaluation job, callable from the entry point and from the R2I chain.

setup (Ray, benchmark) -> one inference pass per model (Ray Data, resumable) -> LLM judge over
what the rules left undecided -> attention coverage (optional) -> metrics.json + report.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pandas as pd

from zwz_ray import uris
from zwz_ray.config import EngineConfig, to_dict
from zwz_ray.eval.config import EvalConfig
from zwz_ray.eval.items import view_key
from zwz_ray.eval.loaders import Benchmark, open_benchmark
from zwz_ray.eval.metrics import compute_metrics
from zwz_ray.eval.stages import answer_dataset, judge_dataset
from zwz_ray.eval.store import PREDICTION_COLUMNS, PredictionStore, answer_fingerprint, merge_predictions
from zwz_ray.eval.writers import make_benchmark_fixture
from zwz_ray.logs import get_logger
from zwz_ray.runtime import init_ray, require_gpus

log = get_logger(__name__)


@dataclass
class ModelRun:
    """What one model's pass did in this run."""

    label: str
    predictions_path: str
    requests: int = 0  # (item, view) rows sent to the model in this run
    previously_answered: int = 0  # rows skipped because an earlier run answered them
    failed: int = 0  # rows recorded with rule "error" in this run (unreadable image, model error)
    seconds: float = 0.0


@dataclass
class EvalResult:
    output_dir: str
    metrics: dict  # the content of metrics.json
    runs: dict[str, ModelRun] = field(default_factory=dict)
    judge_requests: int = 0
    metrics_path: str = ""
    report_path: str | None = None

    def accuracy(self, label: str, view: str = "global") -> float | None:
        return self.metrics["models"][label]["views"].get(view, {}).get("accuracy")


def ensure_benchmark(cfg: EvalConfig) -> None:
    """Write the offline demo benchmark when the config asks for it and the path does not exist."""
    b = cfg.benchmark
    if not b.generate_if_missing:
        return
    fs, inner = uris.filesystem(b.path)
    if not fs.exists(inner):
        log.info("benchmark %s does not exist: generating %d offline demo items", b.path, b.fixture_items)
        make_benchmark_fixture(b.path, b.fixture_items, b.fixture_seed)


def _answer_model(model: EngineConfig, items, store: PredictionStore, cfg: EvalConfig) -> tuple[ModelRun, set[str]]:
    """One inference pass; returns the run summary and every (item, view) key of the benchmark."""
    label, res = model.label, model.resources
    require_gpus(res.num_gpus * res.min_replicas, f"evaluating {label}")
    done = store.done_keys(label, answer_fingerprint(model, cfg.inference))
    run = ModelRun(label, store.path(label), previously_answered=len(done))
    log.info("%s: %d (item, view) answers already stored with these settings", label, len(done))
    start, keys = time.perf_counter(), set()
    for batch in answer_dataset(items, model, cfg.inference, done).iter_batches(batch_format="pandas", batch_size=None):
        keys.update(view_key(str(i), str(v)) for i, v in zip(batch["id"], batch["view"]))
        new = batch[~batch["done"].astype(bool)]
        run.requests += int(new["sent"].astype(bool).sum())
        run.failed += int((new["rule"] == "error").sum())
        store.append_part(label, new[PREDICTION_COLUMNS])
    run.seconds = time.perf_counter() - start
    run.predictions_path = store.save(label, store.load(label))
    log.info("%s: %d new answers in %.1fs (%d failed)", label, run.requests, run.seconds, run.failed)
    return run, keys


def _judge(cfg: EvalConfig, store: PredictionStore, labels: list[str], keys: set[str]) -> int:
    """Send every model's undecided answers to the LLM judge once; returns the number of rows judged."""
    frames = {label: store.load(label) for label in labels}
    todo = pd.concat([_current(df, keys) for df in frames.values()], ignore_index=True)
    todo = todo[(todo["rule"] == "undecided") & todo["extracted"].notna()]
    if todo.empty:
        return 0
    require_gpus(cfg.judge.resources.num_gpus * cfg.judge.resources.min_replicas, "the LLM judge")
    judged = judge_dataset(todo[PREDICTION_COLUMNS], cfg.judge, cfg.judge_options.max_tokens).to_pandas()
    for label in labels:
        mine = judged[judged["model"] == label]
        if len(mine):
            store.save(label, merge_predictions(frames[label], mine[PREDICTION_COLUMNS]))
    log.info("LLM judge decided %d of %d undecided answers", int((judged["rule"] == "llm_judge").sum()), len(judged))
    return len(judged)


def _current(df: pd.DataFrame, keys: set[str]) -> pd.DataFrame:
    """Rows of the benchmark as it is now (a file may hold rows of a longer earlier run)."""
    if df.empty:
        return df
    mask = [view_key(str(i), str(v)) in keys for i, v in zip(df["id"], df["view"])]
    return df[mask]


def _report(cfg: EvalConfig, bench: Benchmark, preds: dict, metrics: dict, coverage: dict, fs, root: str) -> str:
    from zwz_ray.eval.report import plot_dimensions, plot_gap, plot_latency, render_markdown

    fs.makedirs(f"{root}/plots", exist_ok=True)
    plots = {"per-dimension accuracy": "plots/per_dimension.png", "zooming gap": "plots/zooming_gap.png",
             "latency per item": "plots/latency.png"}
    plot_dimensions(metrics, fs, f"{root}/{plots['per-dimension accuracy']}")
    plot_gap(metrics, fs, f"{root}/{plots['zooming gap']}")
    plot_latency(preds, fs, f"{root}/{plots['latency per item']}")
    for label, info in coverage.items():
        for k, path in enumerate(info.get("heatmaps", [])):
            plots[f"attention {label} #{k}"] = path
    judge = cfg.judge.label if cfg.judge else None
    path = uris.join(cfg.output.dir, "report.md")
    uris.atomic_write(path, render_markdown(bench.name, metrics, coverage, plots, judge))
    return path


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate every model of ``cfg`` on the benchmark (dual view) and write predictions, metrics and a report."""
    ensure_benchmark(cfg)
    bench = open_benchmark(cfg.benchmark)  # schema errors surface before Ray starts
    init_ray(cfg.ray)
    store = PredictionStore(cfg.output.dir)
    fs, root = uris.filesystem(cfg.output.dir)
    fs.makedirs(root, exist_ok=True)
    uris.atomic_write(uris.join(cfg.output.dir, "config.json"), json.dumps(to_dict(cfg), indent=2))
    if not cfg.output.resume:
        for m in cfg.models:
            store.save(m.label, pd.DataFrame(columns=PREDICTION_COLUMNS))
    log.info("benchmark %s: %s format, %d file(s)", bench.name, bench.format, len(bench.files))
    items = bench.dataset()
    runs, keys = {}, set()
    for model in cfg.models:
        runs[model.label], model_keys = _answer_model(model, items, store, cfg)
        keys |= model_keys
    labels = [m.label for m in cfg.models]
    judged = _judge(cfg, store, labels, keys) if cfg.judge else 0
    preds = {label: _current(store.load(label), keys) for label in labels}
    per_model = {label: compute_metrics(df) for label, df in preds.items()}
    coverage = {}
    if cfg.coverage.enabled:
        from zwz_ray.eval.coverage_pass import run_coverage

        coverage = run_coverage(cfg, bench, fs, root)
    metrics = {"benchmark": {"name": bench.name, "format": bench.format, "path": cfg.benchmark.path},
               "judge": cfg.judge.label if cfg.judge else None, "models": per_model, "coverage": coverage,
               "runs": {label: vars(r) for label, r in runs.items()}, "judge_requests": judged,
               "created": pd.Timestamp.now("UTC").isoformat()}
    metrics_path = uris.join(cfg.output.dir, "metrics.json")
    uris.atomic_write(metrics_path, json.dumps(metrics, indent=2, default=str))
    report_path = _report(cfg, bench, preds, per_model, coverage, fs, root) if cfg.output.report else None
    return EvalResult(cfg.output.dir, metrics, runs, judged, metrics_path, report_path)
