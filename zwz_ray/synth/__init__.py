"""R2I data synthesis on Ray Data: one small class per paper stage, a builder, a resumable runner.

    from zwz_ray.synth import SynthConfig, build_synthesis, run_synthesis

    plan = build_synthesis(cfg)        # stage list; no model is loaded
    print(plan.names())
    ds = plan.dataset()                # lazy ray.data.Dataset of kept rows (image, problem, answer, ...)
    result = run_synthesis(cfg)        # writes output.dir (kept/, drops/, stats.json); resumable

Exports resolve lazily so that ``import zwz_ray.synth.stages.s08_consensus`` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SynthConfig": "zwz_ray.synth.config",
    "build_synthesis": "zwz_ray.synth.plan",
    "SynthesisPlan": "zwz_ray.synth.plan",
    "StageSpec": "zwz_ray.synth.plan",
    "run_synthesis": "zwz_ray.synth.run",
    "SynthResult": "zwz_ray.synth.run",
    "select_images": "zwz_ray.synth.stages.s01_image_pool",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zwz_ray.synth' has no attribute {name!r}")
