"""R2I data synthesis on Ray Data: one small class per paper stage, a builder, a resumable runner.

    from zwz_ray.synth import SynthConfig, build_synthesis, run_synthesis

    plan = build_synthesis(cfg)        # stage list and model plan; no model is loaded
    print(plan.names(), plan.describe())
    with plan.serving():               # each model one Ray Serve deployment, deleted on exit
        ds = plan.dataset()            # lazy ray.data.Dataset of kept rows (image, problem, answer, ...)
        ...                            # consume it (a trainer, write_parquet) inside the block
    result = run_synthesis(cfg)        # writes output.dir (kept/, drops/, stats.json); resumable

Like every job package, this facade is light to import: the config classes, the ``run_*`` entry (and the
plan builder it runs) and their result types; engines and models are imported when a stage starts.
"""

from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.plan import SynthesisPlan, build_synthesis
from zwz_ray.synth.run import SynthResult, run_synthesis

__all__ = ["SynthConfig", "SynthResult", "SynthesisPlan", "build_synthesis", "run_synthesis"]
