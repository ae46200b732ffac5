"""Configuration of the evaluation job (``pipelines/evaluate.py``, ``zwz_ray.eval.run_eval``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zwz_ray import uris
from zwz_ray.config import ConfigError, EngineConfig, RayConfig, bounded, listed, section, setting, uri

# Fields a benchmark row is read into; ``columns`` in the config maps them to the file's column names.
FIELDS = ("id", "question", "answer", "image", "crop", "bbox", "category", "options")


@dataclass
class BenchmarkConfig:
    """Where the benchmark is and how its columns are named."""

    path: str = uri("hf://datasets/inclusionAI/ZoomBench",
                    doc="parquet / JSON / JSONL file, folder of them or glob; local or fsspec (hf://, s3://)")
    # zoombench: id, query, response, image, crop_image[, question_type, bbox]; generic: see `columns`.
    format: Literal["auto", "zoombench", "generic"] = setting("auto", doc="column layout: zoombench, generic (see columns) or auto")
    name: str = setting("", doc="shown in the report; empty: the file or folder name")
    columns: dict[str, str] = section(dict, doc="field -> column name, over the format's defaults (fields: " + " ".join(FIELDS) + ")")
    bbox_format: Literal["xyxy", "xywh"] = setting("xyxy", doc="layout of the pixel boxes")
    limit: int | None = setting(None, doc="evaluate only the first N items (quick looks); null: all")
    generate_if_missing: bool = setting(False, doc="laptop only: write a generated ZoomBench-layout fixture at `path` if it is missing")
    fixture_items: int = bounded(24, 1, doc="items of that fixture")
    fixture_seed: int = setting(0, doc="seed of that fixture")

    def validate(self, where: str) -> None:
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{where}.columns: unknown field(s) {unknown}; fields are {list(FIELDS)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}.limit must be >= 1 or null, got {self.limit}")
        # memory:// is in-process (tests, notebooks); any other remote benchmark is read, never generated.
        if self.generate_if_missing and uris.is_remote(self.path) and uris.scheme(self.path) != "memory":
            raise ConfigError(f"{where}.generate_if_missing only works with a local path (or memory://), not {self.path!r}")


@dataclass
class InferenceConfig:
    """How every evaluated model answers: the student prompt, greedy by default."""

    views: list[str] = listed("global", "regional", doc="global (the full image) and/or regional (the crop)")
    max_tokens: int = bounded(256, 1, doc="generation limit")
    temperature: float = bounded(0.0, 0.0, 2.0, doc="sampling temperature; 0: greedy")
    top_p: float = bounded(1.0, 0.0, 1.0, doc="nucleus sampling mass")
    seed: int = setting(0, doc="sampling seed")

    def validate(self, where: str) -> None:
        bad = [v for v in self.views if v not in ("global", "regional")]
        if bad or not self.views:
            raise ConfigError(f"{where}.views must be a non-empty subset of ['global', 'regional'], got {self.views}")


@dataclass
class JudgeOptions:
    """How the LLM judge is asked."""

    max_tokens: int = bounded(64, 8, doc="generation limit of the judge")


@dataclass
class CoverageConfig:
    """Attention coverage of the question's box (Qwen-VL models, transformers, eager attention)."""

    enabled: bool = setting(False, doc="measure attention coverage of the question's box")
    layer: int | None = setting(24, doc=(
        "decoder layer read, counted from 1 (the reference: 24 of Qwen3-VL-4B's 36); negative counts from the end "
        "(-1 = the last); null = the middle layer"))
    layer_of: int | None = bounded(36, 1, doc=(
        "the depth `layer` is counted against: a model with L decoder layers reads layer round(layer * L / layer_of), "
        "the same relative depth (24 of 36 is 24 of 36 and 19 of 28); null = `layer` counts each model's own layers"))
    prompt: Literal["raw", "student"] = setting("raw", doc=(
        "raw: the question as it is (the reference); student: with the student prompt's answer-format line"))
    max_pixels: int | None = bounded(2048 * 1024, 1, doc=(
        "largest image the model sees, in pixels (the reference: 2048x1024); null = the model's own max_pixels"))
    cells: Literal["whole", "fraction"] = setting("whole", doc=(
        "whole: every grid cell the box overlaps counts fully (the reference); fraction: by the share of the cell it covers"))
    max_items: int | Literal["all"] = bounded("all", 1, doc="items with a bbox to measure, the first N; all = every one (the reference)")
    heatmaps: int = bounded(4, 0, doc="heatmap PNGs per model")
    models: list[str] = listed(doc="model labels to measure; empty: every Qwen-VL model")

    def validate(self, where: str) -> None:
        if self.layer == 0:
            raise ConfigError(f"{where}.layer counts from 1 (or from -1 at the end); 0 is not a layer")
        if self.layer is not None and self.layer_of is not None and not -self.layer_of <= self.layer <= self.layer_of:
            raise ConfigError(f"{where}.layer {self.layer} is outside the {self.layer_of} layers of layer_of")


@dataclass
class OutputConfig:
    """Where predictions, metrics and the report go."""

    dir: str = uri("outputs/eval", doc="predictions/, metrics.json, report.md: local path or fsspec URI")
    resume: bool = setting(True, doc="skip (item, view, model) triples already in the predictions")
    report: bool = setting(True, doc="write report.md with plots")


@dataclass
class EvalConfig:
    """Top level of an evaluation job."""

    benchmark: BenchmarkConfig = section(BenchmarkConfig, doc="the benchmark")
    models: list[EngineConfig] = section(lambda: [EngineConfig()], doc="the evaluated models (labels must be unique)")
    judge: EngineConfig | None = setting(None, doc="text LLM for answers the rules cannot decide; null: rules only")
    judge_options: JudgeOptions = section(JudgeOptions, doc="how the judge is asked")
    inference: InferenceConfig = section(InferenceConfig, doc="views and sampling of the evaluated models")
    coverage: CoverageConfig = section(CoverageConfig, doc="attention coverage")
    output: OutputConfig = section(OutputConfig, doc="predictions, metrics and report")
    ray: RayConfig = section(RayConfig, doc="the Ray runtime")

    def validate(self, where: str) -> None:
        if not self.models:
            raise ConfigError(f"{where}.models: give at least one model to evaluate")
        labels = [m.label for m in self.models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(f"{where}.models: labels must be unique, {dupes} repeat (set `name` to tell them apart)")
        unknown = sorted(set(self.coverage.models) - set(labels))
        if unknown:
            raise ConfigError(f"{where}.coverage.models: {unknown} are not among the models {labels}")
