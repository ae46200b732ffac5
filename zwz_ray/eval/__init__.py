"""Distributed ZoomBench-style evaluation: dual-view protocol, judge cascade, attention coverage, report.

    from zwz_ray.eval import EvalConfig, run_eval
    result = run_eval(cfg)            # predictions/*.parquet, metrics.json, report.md, plots/
    result.metrics["models"]["tiny:qwen3_vl"]["zooming_gap"]

Entry point: ``python -m pipelines.evaluate --config configs/evaluate/laptop.yaml``. Like every job
package, this facade is light to import: the config classes, the ``run_*`` entry and its result types;
engines and models are imported when the job runs.
"""

from zwz_ray.eval.config import BenchmarkConfig, CoverageConfig, EvalConfig, InferenceConfig, OutputConfig
from zwz_ray.eval.loaders import BenchmarkError
from zwz_ray.eval.run import EvalResult, ModelRun, run_eval

__all__ = ["BenchmarkConfig", "BenchmarkError", "CoverageConfig", "EvalConfig", "EvalResult", "InferenceConfig", "ModelRun",
           "OutputConfig", "run_eval"]
