"""Configuration of the evaluation job (``pipelines/evaluate.py``, ``zwz_ray.eval.run_eval``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zwz_ray.config import ConfigError, EngineConfig, RayConfig, bounded, listed, uri

DEFAULT_PATH = "hf://datasets/inclusionAI/ZoomBench"
# Fields a benchmark row is read into; ``columns`` in the config maps them to the file's column names.
FIELDS = ("id", "question", "answer", "image", "crop", "bbox", "category", "options")


@dataclass
class BenchmarkConfig:
    """Where the benchmark is and how its columns are named."""

    # A parquet / JSON / JSONL file, a folder of them, or a glob; local or fsspec
    # (hf://datasets/inclusionAI/ZoomBench, s3://bucket/zoombench/).
    path: str = uri(DEFAULT_PATH)
    # zoombench: id, query, response, image, crop_image[, question_type, bbox]; generic: see `columns`.
    format: Literal["auto", "zoombench", "generic"] = "auto"
    name: str = ""  # shown in the report; defaults to the file or folder name
    # field -> column name, overriding the format's defaults (fields: id question answer image crop bbox category options)
    columns: dict[str, str] = field(default_factory=dict)
    bbox_format: Literal["xyxy", "xywh"] = "xyxy"  # pixel boxes
    limit: int | None = None  # evaluate only the first N items (quick looks)
    # Laptop only: write a generated ZoomBench-layout fixture at `path` when it does not exist.
    generate_if_missing: bool = False
    fixture_items: int = bounded(24, 1)
    fixture_seed: int = 0
    # A published layout read without a column map, scored with its own rule (zwz_ray.eval.benchmarks.PRESETS);
    # with a preset, `path` left at its default means the preset's published copy.
    preset: str = ""
    image_root: str = ""  # absolute image paths in the files are read under this folder (chroot-style)
    image_prefix: str = "/"  # the part of those absolute paths to drop before joining them to image_root

    def validate(self, where: str) -> None:
        if self.preset:
            from zwz_ray.eval.benchmarks import check_preset

            check_preset(self, where)
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{where}.columns: unknown field(s) {unknown}; fields are {list(FIELDS)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}.limit must be >= 1 or null, got {self.limit}")
        if self.generate_if_missing and "://" in self.path and not self.path.startswith(("file://", "memory://")):
            raise ConfigError(f"{where}.generate_if_missing only works with a local path, not {self.path!r}")


@dataclass
class InferenceConfig:
    """How every evaluated model answers: the student prompt, greedy by default."""

    views: list[str] = listed("global", "regional")
    max_tokens: int = bounded(256, 1)
    temperature: float = bounded(0.0, 0.0, 2.0)
    top_p: float = bounded(1.0, 0.0, 1.0)
    seed: int = 0

    def validate(self, where: str) -> None:
        bad = [v for v in self.views if v not in ("global", "regional")]
        if bad or not self.views:
            raise ConfigError(f"{where}.views must be a non-empty subset of ['global', 'regional'], got {self.views}")


@dataclass
class JudgeOptions:
    max_tokens: int = bounded(64, 8)


@dataclass
class CoverageConfig:
    """Attention coverage of the question's box (Qwen-VL models, transformers, eager attention)."""

    enabled: bool = False
    layer: int | None = field(default=24, metadata={"doc": (
        "decoder layer read, counted from 1 (the reference: 24 of Qwen3-VL-4B's 36); negative counts from the end "
        "(-1 = the last); null = the middle layer")})
    layer_of: int | None = bounded(36, 1, doc=(
        "the depth `layer` is counted against: a model with L decoder layers reads layer round(layer * L / layer_of), "
        "the same relative depth (24 of 36 is 24 of 36 and 19 of 28); null = `layer` counts each model's own layers"))
    prompt: Literal["raw", "student"] = field(default="raw", metadata={"doc": (
        "raw: the question as it is (the reference); student: with the student prompt's answer-format line")})
    max_pixels: int | None = bounded(2048 * 1024, 1, doc=(
        "largest image the model sees, in pixels (the reference: 2048x1024); null = the model's own max_pixels"))
    cells: Literal["whole", "fraction"] = field(default="whole", metadata={"doc": (
        "whole: every grid cell the box overlaps counts fully (the reference); fraction: by the share of the cell it covers")})
    max_items: int | Literal["all"] = bounded("all", 1, doc="items with a bbox to measure, the first N; all = every one (the reference)")
    heatmaps: int = bounded(4, 0)  # heatmap PNGs per model
    models: list[str] = field(default_factory=list)  # labels to measure; empty = every Qwen-VL model

    def validate(self, where: str) -> None:
        if self.layer == 0:
            raise ConfigError(f"{where}.layer counts from 1 (or from -1 at the end); 0 is not a layer")
        if self.layer is not None and self.layer_of is not None and not -self.layer_of <= self.layer <= self.layer_of:
            raise ConfigError(f"{where}.layer {self.layer} is outside the {self.layer_of} layers of layer_of")


@dataclass
class OutputConfig:
    dir: str = uri("outputs/eval")
    resume: bool = True  # skip (item, view, model) triples already in the predictions
    report: bool = True


@dataclass
class EvalConfig:
    """Top level of an evaluation job."""

    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    models: list[EngineConfig] = field(default_factory=lambda: [EngineConfig()])
    judge: EngineConfig | None = None  # text LLM for answers the rules cannot decide
    judge_options: JudgeOptions = field(default_factory=JudgeOptions)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    coverage: CoverageConfig = field(default_factory=CoverageConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    # Several benchmarks in one job (zwz_ray.eval.benchmarks.suite.run_suite): `benchmark` is then unused,
    # each model loads once for all of them, and report.md / summary.csv hold one row per model.
    suite: list[BenchmarkConfig] = field(default_factory=list)

    def validate(self, where: str) -> None:
        if self.suite:
            from zwz_ray.eval.benchmarks.suite import check_suite

            check_suite(self, where)
        if not self.models:
            raise ConfigError(f"{where}.models: give at least one model to evaluate")
        labels = [m.label for m in self.models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(f"{where}.models: labels must be unique, {dupes} repeat (set `name` to tell them apart)")
        unknown = sorted(set(self.coverage.models) - set(labels))
        if unknown:
            raise ConfigError(f"{where}.coverage.models: {unknown} are not among the models {labels}")
