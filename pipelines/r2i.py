"""The whole R2I chain in one Ray job: synthesis -> distillation -> evaluation -> report.

    python -m pipelines.r2i [--config configs/r2i/laptop.yaml] [--set output.dir=... ...]

On a cluster: ``ray job submit --working-dir . -- python -m pipelines.r2i --config configs/cluster/r2i.yaml``
(the driver finds the cluster through RAY_ADDRESS, which ``ray job submit`` sets).
"""

from __future__ import annotations

import sys

from zwz_ray.chain import R2IConfig, R2IResult, run_r2i
from zwz_ray.cli import Job

CONFIG_CLASS = R2IConfig


def summary(result: R2IResult) -> list[str]:
    lines = []
    for label, m in result.summary["evaluation"].get("models", {}).items():
        views = m.get("views", {})
        lines.append(f"{label}: " + ", ".join(f"{v} {100 * views[v]['accuracy']:.1f}%" for v in ("global", "regional") if v in views))
    return [*lines, f"report: {result.report_path}"]


JOB = Job("r2i", R2IConfig, "r2i", run_r2i, summary)


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
