"""Distributed ZoomBench-style evaluation: dual-view protocol, judge cascade, attention coverage, report.

    from zwz_ray.eval import EvalConfig, run_eval
    result = run_eval(cfg)            # predictions/*.parquet, metrics.json, report.md, plots/
    result.metrics["models"]["tiny:qwen3_vl"]["zooming_gap"]

Entry point: ``python -m pipelines.evaluate --config configs/evaluate/laptop.yaml``.
"""

from zwz_ray.eval.config import BenchmarkConfig, CoverageConfig, EvalConfig, InferenceConfig, OutputConfig
from zwz_ray.eval.loaders import Benchmark, BenchmarkError, open_benchmark
from zwz_ray.eval.metrics import compute_metrics
from zwz_ray.eval.run import EvalResult, ModelRun, run_eval
from zwz_ray.judge import LLMJudge
from zwz_ray.replies import RULES, Verdict, detect_mcq, extract_answer, judge_answer, normalize_answer, parse_options

__all__ = [
    "RULES",
    "Benchmark",
    "BenchmarkConfig",
    "BenchmarkError",
    "CoverageConfig",
    "EvalConfig",
    "EvalResult",
    "InferenceConfig",
    "LLMJudge",
    "ModelRun",
    "OutputConfig",
    "Verdict",
    "compute_metrics",
    "detect_mcq",
    "extract_answer",
    "judge_answer",
    "normalize_answer",
    "open_benchmark",
    "parse_options",
    "run_eval",
]
