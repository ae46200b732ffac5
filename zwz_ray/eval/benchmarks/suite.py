"""A benchmark suite in one Ray job: ``EvalConfig.suite`` lists the benchmarks, every model answers all of them.

Each model loads once: the items of every benchmark go through one Ray Data pass per model (item
ids carry their benchmark's key, so one actor pool of that model answers them all), and the
answers are filed per benchmark under ``output.dir/<benchmark>/predictions``. Then, per
benchmark: the LLM judge on what the rules left undecided (one judge deployment for the whole suite,
started by the first benchmark with something to judge: :mod:`zwz_ray.eval.serving`), the
benchmark's own rule and breakdown, ``<benchmark>/metrics.json``. Finally the summary table
(rows: models; columns: benchmarks, the paper's table shape) in ``report.md``, ``summary.csv``
and ``plots/summary.png``. Re-running resumes per benchmark and model.

    python -m pipelines.evaluate --config configs/evaluate/suite.yaml
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import pandas as pd
from fsspec.core import url_to_fs

from zwz_ray.config import ConfigError, EngineConfig, to_dict
from zwz_ray.eval.config import EvalConfig, suite_key
from zwz_ray.eval.items import view_key
from zwz_ray.eval.store import PREDICTION_COLUMNS, PredictionStore, answer_fingerprint
from zwz_ray.logs import get_logger

log = get_logger(__name__)
SEP = "\x1e"  # between a benchmark's key and an item id while the benchmarks share one pass


@dataclass
class SuiteRun:
    """What one model's pass over the whole suite did in this run."""

    label: str
    requests: dict[str, int] = field(default_factory=dict)  # benchmark -> (item, view) rows sent to the model
    previously_answered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class SuiteResult:
    output_dir: str
    summary: pd.DataFrame  # rows: models; columns: benchmark (view) headline scores in %
    metrics: dict  # the content of suite.json: per benchmark, per model, the metrics and the benchmark's scores
    runs: dict[str, SuiteRun]
    report_path: str
    csv_path: str
    plot_path: str


def _tag(batch: pd.DataFrame, key: str) -> pd.DataFrame:
    batch = batch.copy()
    batch["id"] = [f"{key}{SEP}{i}" for i in batch["id"]]
    return batch


def _answer_suite(model: EngineConfig, benches: dict, stores: dict[str, PredictionStore], cfg: EvalConfig,
                  keys: dict[str, set]) -> SuiteRun:
    """One pass of ``model`` over every benchmark (one actor pool, the model loaded once per replica)."""
    from zwz_ray.eval.stages import answer_dataset
    from zwz_ray.runtime import require_gpus

    label, res = model.label, model.resources
    require_gpus(res.num_gpus * res.min_replicas, f"evaluating {label}")
    fingerprint = answer_fingerprint(model, cfg.inference)
    run, done, items = SuiteRun(label), set(), None
    for key, bench in benches.items():
        mine = stores[key].done_keys(label, fingerprint)
        run.previously_answered[key] = len(mine)
        run.requests[key] = run.failed[key] = 0
        done |= {f"{key}{SEP}{k}" for k in mine}
        ds = bench.dataset().map_batches(_tag, batch_format="pandas", fn_kwargs={"key": key})
        items = ds if items is None else items.union(ds)
    start = time.perf_counter()
    for batch in answer_dataset(items, model, cfg.inference, done).iter_batches(batch_format="pandas", batch_size=None):
        split = batch["id"].astype(str).str.split(SEP, n=1, regex=False)
        batch = batch.assign(id=split.str[1], _bench=split.str[0])
        for key, part in batch.groupby("_bench", sort=False):
            keys[key].update(view_key(str(i), str(v)) for i, v in zip(part["id"], part["view"]))
            new = part[~part["done"].astype(bool)]
            run.requests[key] += int(new["sent"].astype(bool).sum())
            run.failed[key] += int((new["rule"] == "error").sum())
            stores[key].append_part(label, new[PREDICTION_COLUMNS])
    run.seconds = time.perf_counter() - start
    for store in stores.values():
        store.save(label, store.load(label))
    log.info("%s: %d new answers over %d benchmarks in %.1fs", label, sum(run.requests.values()), len(benches), run.seconds)
    return run


def _write(fs, path: str, text: str) -> None:
    with fs.open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def run_suite(cfg: EvalConfig) -> SuiteResult:
    """Evaluate every model of ``cfg`` on every benchmark of ``cfg.suite``; write the summary table."""
    from zwz_ray.eval.benchmarks import benchmark_scores, open_any, rescore
    from zwz_ray.eval.benchmarks.suite_report import summary_table, write_summary
    from zwz_ray.eval.metrics import compute_metrics
    from zwz_ray.eval.run import _current, _judge, ensure_benchmark
    from zwz_ray.eval.serving import JudgeServing
    from zwz_ray.runtime import init_ray

    if not cfg.suite:
        raise ConfigError("run_suite: the config has no `suite` of benchmarks")
    benches = {}
    for b in cfg.suite:  # every benchmark is found and checked before Ray starts
        ensure_benchmark(replace(cfg, benchmark=b))
        benches[suite_key(b)] = open_any(b)
    init_ray(cfg.ray)
    fs, root = url_to_fs(cfg.output.dir)
    fs.makedirs(root, exist_ok=True)
    _write(fs, f"{root}/config.json", json.dumps(to_dict(cfg), indent=2))
    stores = {key: PredictionStore(f"{cfg.output.dir.rstrip('/')}/{key}") for key in benches}
    labels = [m.label for m in cfg.models]
    if not cfg.output.resume:
        for store in stores.values():
            for label in labels:
                store.save(label, pd.DataFrame(columns=PREDICTION_COLUMNS))
    keys = {key: set() for key in benches}
    runs = {m.label: _answer_suite(m, benches, stores, cfg, keys) for m in cfg.models}
    results = {}
    with JudgeServing(cfg.judge, cfg.serving) as judging:  # one judge deployment for every benchmark, if any needs it
        for key, bench in benches.items():
            judged, loads = _judge(cfg, stores[key], labels, keys[key], judging) if cfg.judge else (0, 0)
            preds = {label: rescore(bench, _current(stores[key].load(label), keys[key])) for label in labels}
            results[key] = {"name": bench.name, "preset": getattr(bench, "preset", None) and bench.preset.name,
                            "models": {label: compute_metrics(df) for label, df in preds.items()},
                            "scores": benchmark_scores(bench, preds), "judge_requests": judged, "judge_model_loads": loads}
            _write(fs, f"{root}/{key}/metrics.json", json.dumps(results[key], indent=2, default=str))
    summary = summary_table(results, labels)
    suite = {"benchmarks": results, "summary": summary.reset_index().to_dict("records"),
             "runs": {label: vars(r) for label, r in runs.items()}, "judge": cfg.judge.label if cfg.judge else None,
             "judge_model_loads": sum(r["judge_model_loads"] for r in results.values()), "judge_served": judging.started,
             "created": pd.Timestamp.now("UTC").isoformat()}
    _write(fs, f"{root}/suite.json", json.dumps(suite, indent=2, default=str))
    paths = write_summary(summary, results, runs, cfg, fs, root)
    return SuiteResult(cfg.output.dir, summary, suite, runs, *paths)
