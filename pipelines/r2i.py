"""The whole R2I chain in one Ray job: synthesis -> distillation -> evaluation -> report.

    python -m pipelines.r2i [--config configs/r2i/laptop.yaml] [--set output.dir=... ...]

On a cluster: ``ray job submit --working-dir . -- python -m pipelines.r2i --config configs/cluster/r2i.yaml``
(the driver finds the cluster through RAY_ADDRESS, which ``ray job submit`` sets).
"""

from __future__ import annotations

import os
import sys

from zwz_ray.chain import R2IConfig

CONFIG_CLASS = R2IConfig
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "r2i", "laptop.yaml")


def main(argv: list[str] | None = None) -> int:
    from zwz_ray.chain import run_r2i
    from zwz_ray.config import config_from_cli

    default = DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None
    cfg = config_from_cli(R2IConfig, argv, description=__doc__.splitlines()[0], default_config=default)
    result = run_r2i(cfg)
    evaluation = result.summary["evaluation"].get("models", {})
    for label, m in evaluation.items():
        views = m.get("views", {})
        accs = ", ".join(f"{v} {100 * views[v]['accuracy']:.1f}%" for v in ("global", "regional") if v in views)
        print(f"{label}: {accs}")
    print(f"report: {result.report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
