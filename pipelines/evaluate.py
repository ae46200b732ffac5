"""Evaluate models on ZoomBench (or V*, HR-Bench, MME-RealWorld style sets) with the dual-view protocol.

    python -m pipelines.evaluate --config configs/evaluate/laptop.yaml
    python -m pipelines.evaluate --config configs/evaluate/cluster.yaml --set output.dir=s3://bucket/eval
    ray job submit --working-dir . -- python -m pipelines.evaluate --config configs/evaluate/cluster.yaml

Every model answers every item on the full image (global view) and on its crop (regional view)
in a Ray Data actor pool; answers are judged by rules, then by an LLM judge if one is
configured; predictions, metrics.json and report.md (with plots) land in ``output.dir``.
Re-running the same command answers only what is missing.
"""

from __future__ import annotations

import sys

from zwz_ray.config import config_from_cli
from zwz_ray.eval import BenchmarkError, EvalConfig, run_eval
from zwz_ray.eval.metrics import pct
from zwz_ray.logs import get_logger

CONFIG_CLASS = EvalConfig

log = get_logger("pipelines.evaluate")


def summary_lines(result) -> list[str]:
    lines = []
    for label, m in result.metrics["models"].items():
        views = m["views"]
        gap = m.get("zooming_gap")
        run = result.runs[label]
        lines.append(
            f"{label}: global {pct(views.get('global', {}).get('accuracy'))}  regional "
            f"{pct(views.get('regional', {}).get('accuracy'))}  gap {pct(gap['gap']) if gap else '-'}  "
            f"({run.requests} new answers, {run.previously_answered} reused)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_cli(EvalConfig, argv, description=__doc__.split("\n\n")[0])
    try:
        result = run_eval(cfg)
    except BenchmarkError as exc:
        print(f"benchmark error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(result):
        print(line)
    print(f"report: {result.report_path or '(disabled)'}\nmetrics: {result.metrics_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
