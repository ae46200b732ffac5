"""R2I data synthesis: images -> kept multiple-choice rows with a red box, drops and stats.

    python -m pipelines.synthesize --config configs/synth/laptop.yaml
    python -m pipelines.synthesize --config configs/synth/cluster.yaml --set output.dir=s3://bucket/run1

Rerunning the same command resumes: images of committed chunks are skipped.
"""

from __future__ import annotations

import sys

from zwz_ray.config import ConfigError, config_from_cli
from zwz_ray.images import ImageInputError
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.run import run_synthesis

CONFIG_CLASS = SynthConfig


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_cli(SynthConfig, argv, description=__doc__.splitlines()[0])
    try:
        result = run_synthesis(cfg)
    except (ConfigError, ImageInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
