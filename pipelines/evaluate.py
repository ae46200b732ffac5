"""Evaluate models on ZoomBench (or V*, HR-Bench, MME-RealWorld style sets) with the dual-view protocol.

    python -m pipelines.evaluate [--config configs/evaluate/laptop.yaml]
    python -m pipelines.evaluate --config configs/evaluate/cluster.yaml --set output.dir=s3://bucket/eval
    ray job submit --working-dir . -- python -m pipelines.evaluate --config configs/evaluate/cluster.yaml

Every model answers every item on the full image (global view) and on its crop (regional view)
in a Ray Data actor pool; answers are judged by rules, then by an LLM judge if one is
configured; predictions, metrics.json and report.md (with plots) land in ``output.dir``.
Re-running the same command answers only what is missing.
"""

from __future__ import annotations

import sys

from zwz_ray.cli import Job
from zwz_ray.eval import BenchmarkError, EvalConfig, EvalResult, run_eval
from zwz_ray.eval.metrics import pct

CONFIG_CLASS = EvalConfig


def summary(result: EvalResult) -> list[str]:
    lines = []
    for label, m in result.metrics["models"].items():
        views, gap, run = m["views"], m.get("zooming_gap"), result.runs[label]
        lines.append(f"{label}: global {pct(views.get('global', {}).get('accuracy'))}  regional "
                     f"{pct(views.get('regional', {}).get('accuracy'))}  gap {pct(gap['gap']) if gap else '-'}  "
                     f"({run.requests} new answers, {run.previously_answered} reused)")
    return [*lines, f"report: {result.report_path or '(disabled)'}", f"metrics: {result.metrics_path}"]


JOB = Job("evaluate", EvalConfig, "evaluate", run_eval, summary, errors=(BenchmarkError,))


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
