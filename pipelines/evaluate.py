"""Evaluate models on ZoomBench (or V*, HR-Bench, MME-RealWorld style sets) with the dual-view protocol.

    python -m pipelines.evaluate [--config configs/evaluate/laptop.yaml]
    python -m pipelines.evaluate --config configs/evaluate/cluster.yaml --set output.dir=s3://bucket/eval
    ray job submit --working-dir . -- python -m pipelines.evaluate --config configs/evaluate/cluster.yaml

Every model answers every item on the full image (global view) and on its crop (regional view)
in a Ray Data actor pool; answers are judged by rules, then by an LLM judge if one is
configured (served once on Ray Serve while there is something to judge; ``serving.mode``); predictions, metrics.json and report.md (with plots) land in ``output.dir``.
Re-running the same command answers only what is missing. ``benchmark.preset`` reads one of the
paper's benchmarks in its published layout (``configs/evaluate/<preset>.yaml``); a ``suite`` of
them runs in one job with one summary table (``configs/evaluate/suite.yaml``).
"""

from __future__ import annotations

import sys

from zwz_ray.cli import Job
from zwz_ray.eval import BenchmarkError, EvalConfig, EvalResult, run_eval
from zwz_ray.eval.metrics import pct

CONFIG_CLASS = EvalConfig


def evaluate(cfg: EvalConfig):
    """One benchmark (``benchmark``), or every benchmark of ``suite`` in one job."""
    if cfg.suite:
        from zwz_ray.eval.benchmarks.suite import run_suite

        return run_suite(cfg)
    return run_eval(cfg)


def summary(result) -> list[str]:
    if not isinstance(result, EvalResult):  # a suite: the table, one row per model
        table = result.summary.to_string(float_format=lambda v: f"{v:.2f}")
        return [*table.splitlines(), f"report: {result.report_path}", f"summary: {result.csv_path}"]
    lines = []
    for label, m in result.metrics["models"].items():
        views, gap, run = m["views"], m.get("zooming_gap"), result.runs[label]
        lines.append(f"{label}: global {pct(views.get('global', {}).get('accuracy'))}  regional "
                     f"{pct(views.get('regional', {}).get('accuracy'))}  gap {pct(gap['gap']) if gap else '-'}  "
                     f"({run.requests} new answers, {run.previously_answered} reused; protocol {m.get('protocol', '-')})")
    return [*lines, f"report: {result.report_path or '(disabled)'}", f"metrics: {result.metrics_path}"]


JOB = Job("evaluate", EvalConfig, "evaluate", evaluate, summary, errors=(BenchmarkError,))


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
