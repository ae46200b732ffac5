"""R2I data synthesis: images -> kept multiple-choice rows with a red box, drops and stats.

    python -m pipelines.synthesize [--config configs/synth/laptop.yaml]
    python -m pipelines.synthesize --config configs/synth/cluster.yaml --set output.dir=s3://bucket/run1
    python -m pipelines.synthesize --config configs/synth/cluster.yaml --plan   # models, replicas, GPUs; starts nothing

Rerunning the same command resumes: images of committed chunks are skipped.
"""

from __future__ import annotations

import sys

from zwz_ray.cli import Job
from zwz_ray.images import ImageInputError
from zwz_ray.synth import SynthConfig, SynthResult, build_synthesis, run_synthesis

CONFIG_CLASS = SynthConfig


def summary(result: SynthResult) -> list[str]:
    return [result.summary()]


def plan(cfg: SynthConfig) -> str:
    return build_synthesis(cfg).describe()


JOB = Job("synthesize", SynthConfig, "synth", run_synthesis, summary, errors=(ImageInputError,), plan=plan)


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
