"""``run_eval``: the whole evaluation job, callable from the entry point and from the R2I chain.

setup (Ray, benchmark) -> one inference pass per model (Ray Data, resumable) -> LLM judge over
what the rules left undecided (one Serve deployment, started only when there is something to judge:
:mod:`zwz_ray.eval.serving`) -> attention coverage (optional) -> metrics.json + report.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import pandas as pd

from zwz_ray import uris
from zwz_ray.config import EngineConfig, to_dict
from zwz_ray.eval.benchmarks import benchmark_scores, open_any, rescore, scores_markdown
from zwz_ray.eval.config import EvalConfig
from zwz_ray.eval.items import view_key
from zwz_ray.eval.loaders import Benchmark
from zwz_ray.eval.metrics import compute_metrics
from zwz_ray.eval.serving import JudgeServing
from zwz_ray.eval.stages import answer_dataset, judge_dataset, protocol_record
from zwz_ray.eval.store import (
    PREDICTION_COLUMNS,
    PredictionStore,
    answer_fingerprint,
    benchmark_fingerprint,
    content_digest,
    merge_predictions,
)
from zwz_ray.eval.writers import make_benchmark_fixture
from zwz_ray.logs import get_logger
from zwz_ray.progress import Progress
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
    model_loads: int = 0  # engines built for this pass (0 when every answer was already stored)
    skipped: bool = False  # nothing was new: the pass did not run


@dataclass
class EvalResult:
    output_dir: str
    metrics: dict  # the content of metrics.json
    runs: dict[str, ModelRun] = field(default_factory=dict)
    judge_requests: int = 0
    judge_model_loads: int = 0  # the judge's model loads in this run (0: nothing to judge, or an openai endpoint)
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


def _answer_model(model: EngineConfig, items, store: PredictionStore, cfg: EvalConfig,
                  known: set[str] | None, zoombench: bool = False) -> tuple[ModelRun, set[str]]:
    """One inference pass; returns the run summary and every (item, view) key of the benchmark. With the
    benchmark's keys ``known`` from an earlier run and all of them answered, the pass (and the model) is skipped."""
    label, res = model.label, model.resources
    done = store.done_keys(label, answer_fingerprint(model, cfg.inference))
    run = ModelRun(label, store.path(label), previously_answered=len(done))
    log.info("%s: %d (item, view) answers already stored with these settings", label, len(done))
    if known is not None and known <= done:
        log.info("%s: nothing new to answer; the model is not loaded", label)
        return replace(run, skipped=True), known
    require_gpus(res.num_gpus * res.min_replicas, f"evaluating {label}")
    start, keys = time.perf_counter(), set()
    with Progress(f"evaluating {label}", "answers") as progress:
        for batch in answer_dataset(items, model, cfg.inference, done, zoombench).iter_batches(batch_format="pandas", batch_size=None):
            keys.update(view_key(str(i), str(v)) for i, v in zip(batch["id"], batch["view"]))
            run.model_loads += int(batch["engine_loads"].fillna(0).sum())
            new = batch[~batch["done"].astype(bool)]
            run.requests += int(new["sent"].astype(bool).sum())
            run.failed += int((new["rule"] == "error").sum())
            store.append_part(label, new[PREDICTION_COLUMNS])
            progress.update(len(new), failed=run.failed)
    run.seconds = time.perf_counter() - start
    run.predictions_path = store.save(label, store.load(label))
    log.info("%s: %d new answers in %.1fs (%d failed)", label, run.requests, run.seconds, run.failed)
    return run, keys


def _judge(cfg: EvalConfig, store: PredictionStore, labels: list[str], keys: set[str], judging: JudgeServing) -> tuple[int, int]:
    """Send every model's undecided answers to the LLM judge once; returns the rows judged and the judge's model
    loads in this call (a served judge's load is counted by the call that started it: once per job)."""
    frames = {label: store.load(label) for label in labels}
    todo = pd.concat([_current(df, keys) for df in frames.values()], ignore_index=True)
    # a row the judge already saw (and left undecided) is not sent again: a rerun with nothing new loads no judge
    todo = todo[(todo["rule"] == "undecided") & todo["extracted"].notna() & todo["judge_output"].isna()]
    if todo.empty:
        return 0, 0
    judging.require_gpus()
    decision = cfg.inference.protocol_settings().judge_prompt
    judged = judge_dataset(todo[PREDICTION_COLUMNS], cfg.judge, cfg.judge_options.max_tokens, decision,
                           served=judging.refs(), serving=cfg.serving).to_pandas()
    for label in labels:
        mine = judged[judged["model"] == label]
        if len(mine):
            store.save(label, merge_predictions(frames[label], mine[PREDICTION_COLUMNS]))
    loads = int(judged["engine_loads"].fillna(0).sum())
    log.info("LLM judge decided %d of %d undecided answers", int((judged["rule"] == "llm_judge").sum()), len(judged))
    return len(judged), loads


def _agent_passes(cfg: EvalConfig, items, store: PredictionStore, keys: set[str]) -> dict:
    """The zoom-agent baseline (``cfg.agent``) of the models it names; adds its (item, view) keys to ``keys``."""
    if not cfg.agent.enabled:
        return {}
    from zwz_ray.eval.agent import run_agent_pass

    runs = {}
    for model in cfg.models:
        if not cfg.agent.models or model.label in cfg.agent.models:
            runs[model.label], agent_keys = run_agent_pass(model, items, store, cfg)
            keys |= agent_keys
    return runs


def _traces(cfg: EvalConfig, label: str, keys: set[str]):
    if not cfg.agent.enabled:
        return None
    from zwz_ray.eval.agent import load_traces

    return load_traces(cfg.output.dir, label, keys)


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
    refs = [m.model for m in cfg.models] + ([cfg.judge.model] if cfg.judge else [])
    own = scores_markdown(bench.name, benchmark_scores(bench, preds))  # a preset's own breakdown
    path = uris.join(cfg.output.dir, "report.md")
    from zwz_ray.eval.report import agent_section

    text = render_markdown(bench.name, metrics, coverage, plots, judge, refs) + "\n".join(own) + "\n".join(agent_section(metrics, fs, root))
    uris.atomic_write(path, text)
    return path


def _coverage(cfg: EvalConfig, bench: Benchmark, store: PredictionStore, bench_fp: str, fs, root: str) -> dict:
    """Attention coverage per model, reusing what is stored for the same model content, settings and items."""
    from zwz_ray.eval.coverage_pass import run_coverage

    wanted = [m for m in cfg.models if not cfg.coverage.models or m.label in cfg.coverage.models]
    settings = {k: v for k, v in to_dict(cfg.coverage).items() if k not in ("enabled", "models")}
    fps = {m.label: content_digest({"model": answer_fingerprint(m, cfg.inference), "coverage": settings, "benchmark": bench_fp})
           for m in wanted}
    out = {m.label: store.coverage(m.label, fps[m.label]) for m in wanted}
    todo = [label for label, summary in out.items() if summary is None]
    if len(todo) < len(out):
        log.info("attention coverage reused for %s (same model content, settings and items)", sorted(set(out) - set(todo)))
    if todo:
        computed = run_coverage(replace(cfg, coverage=replace(cfg.coverage, models=todo)), bench, fs, root)
        for label in todo:
            out[label] = {**computed[label], "reused": False}
            store.save_coverage(label, fps[label], {**computed[label], "reused": True})
    return out


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate every model of ``cfg`` on the benchmark (dual view) and write predictions, metrics and a report.

    A rerun answers only what is new; a model with nothing new is not loaded, and its attention coverage is
    reused when the model's content, the coverage settings and the benchmark are unchanged."""
    from zwz_ray.preflight import check_eval

    check_eval(cfg)  # every path and the output folder, before anything is written or Ray starts
    ensure_benchmark(cfg)
    bench = open_any(cfg.benchmark)  # schema errors surface before Ray starts
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
    bench_fp = benchmark_fingerprint(bench, cfg.inference.views)
    known = store.benchmark_keys(bench_fp) if cfg.output.resume else None
    runs, keys = {}, set()
    for model in cfg.models:
        runs[model.label], model_keys = _answer_model(model, items, store, cfg, known, bench.format == "zoombench")
        keys |= model_keys
    if keys and keys != known:
        store.save_benchmark_keys(bench_fp, keys)
    agent_runs = _agent_passes(cfg, items, store, keys)
    labels = [m.label for m in cfg.models]
    with JudgeServing(cfg.judge, cfg.serving) as judging:  # started only when there is something to judge
        judged, judge_loads = _judge(cfg, store, labels, keys, judging) if cfg.judge else (0, 0)
    preds = {label: rescore(bench, _current(store.load(label), keys)) for label in labels}
    per_model = {label: {**compute_metrics(df, _traces(cfg, label, keys)), "protocol": cfg.inference.describe()}
                 for label, df in preds.items()}
    coverage = _coverage(cfg, bench, store, bench_fp, fs, root) if cfg.coverage.enabled else {}
    metrics = {"benchmark": {"name": bench.name, "format": bench.format, "path": cfg.benchmark.path},
               "protocol": protocol_record(cfg), "judge": cfg.judge.label if cfg.judge else None, "models": per_model,
               "coverage": coverage, "scores": benchmark_scores(bench, preds),
               "runs": {label: vars(r) for label, r in runs.items()}, "judge_requests": judged,
               "judge_model_loads": judge_loads, "judge_served": judging.started,
               "agent_runs": {label: vars(r) for label, r in agent_runs.items()},
               "created": pd.Timestamp.now("UTC").isoformat()}
    metrics_path = uris.join(cfg.output.dir, "metrics.json")
    uris.atomic_write(metrics_path, json.dumps(metrics, indent=2, default=str))
    report_path = _report(cfg, bench, preds, per_model, coverage, fs, root) if cfg.output.report else None
    return EvalResult(cfg.output.dir, metrics, runs, judged, judge_loads, metrics_path, report_path)
