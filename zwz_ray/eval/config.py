"""Configuration of the evaluation job (``pipelines/evaluate.py``, ``zwz_ray.eval.run_eval``)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from typing import Literal

from zwz_ray import uris
from zwz_ray.config import ConfigError, EngineConfig, RayConfig, bounded, listed, section, setting, uri
from zwz_ray.engines.serving import ServingConfig

DEFAULT_PATH = "hf://datasets/inclusionAI/ZoomBench"
# The benchmark presets (zwz_ray.eval.benchmarks.PRESETS; a test keeps the two equal). Named here so that a
# mistyped preset fails while the config loads, without the config importing the benchmark readers.
PRESET_NAMES = ("babyvision", "colorbench", "countqa", "cvbench_2d", "cvbench_3d", "hrbench_4k", "hrbench_8k", "mme_realworld",
                "mme_realworld_cn", "mme_realworld_lite", "mmstar", "reference", "vstar", "zoombench")

# Fields a benchmark row is read into; ``columns`` in the config maps them to the file's column names.
FIELDS = ("id", "question", "answer", "image", "crop", "bbox", "category", "options")


@dataclass
class BenchmarkConfig:
    """Where the benchmark is and how its columns are named."""

    path: str = uri(DEFAULT_PATH,
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
    preset: str = setting("", doc="a published layout read without a column map and scored with its own rule "
                                  "(zwz_ray.eval.benchmarks.PRESETS); `path` left at its default = the preset's published copy")
    image_root: str = setting("", doc="absolute image paths in the files are read under this folder (chroot-style)")
    image_prefix: str = setting("/", doc="the part of those absolute paths dropped before joining them to image_root")

    def validate(self, where: str) -> None:
        if self.preset and self.preset not in PRESET_NAMES:
            hint = difflib.get_close_matches(self.preset, PRESET_NAMES, n=1)
            raise ConfigError(f"{where}.preset: unknown benchmark preset {self.preset!r}"
                              f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; presets are {list(PRESET_NAMES)}")
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{where}.columns: unknown field(s) {unknown}; fields are {list(FIELDS)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}.limit must be >= 1 or null, got {self.limit}")
        # memory:// is in-process (tests, notebooks); any other remote benchmark is read, never generated.
        if self.generate_if_missing and uris.is_remote(self.path) and uris.scheme(self.path) != "memory":
            raise ConfigError(f"{where}.generate_if_missing only works with a local path (or memory://), not {self.path!r}")


# --------------------------------------------------------------------------- protocols
# ``inference.protocol`` picks how every model is asked and judged. ``reference`` is the published
# setting (the paper's ``mm-eval`` scripts): a system turn asking for reasoning then <answer> tags, the
# raw question, Qwen3's recommended sampling, seed 42, 8192 new tokens, 65,536..16,777,216 pixels, the
# "eval" extraction, a plain yes/no judge (Qwen3-30B-A3B-Instruct-2507 at temperature 0), and no letter
# matching on ZoomBench. ``fast`` is greedy with the student prompt and short answers: cheap, and
# deterministic, but its numbers do not sit beside the published ones.

REFERENCE_JUDGE = "Qwen/Qwen3-30B-A3B-Instruct-2507"


@dataclass(frozen=True)
class Protocol:
    """Everything a protocol decides; :meth:`InferenceConfig.protocol_settings` resolves it."""

    name: str
    prompt: Literal["student", "reference"]  # student: the student prompt, no system turn; reference: system turn + raw question
    temperature: float
    top_p: float
    top_k: int | None
    presence_penalty: float
    repetition_penalty: float
    seed: int
    max_tokens: int
    min_pixels: int | None  # None: each model's own setting
    max_pixels: int | None
    extraction: str  # a zwz_ray.replies extraction policy
    judge_prompt: Literal["json", "yes_no"]
    zoombench_letters: bool  # letter matching on ZoomBench's multiple-choice items (other MCQ benchmarks always)
    judge_model: str | None = None  # the judge the protocol was published with (recorded, compared)


PROTOCOLS = {
    "fast": Protocol("fast", "student", 0.0, 1.0, None, 0.0, 1.0, 0, 256, None, None, "default", "json", True),
    "reference": Protocol("reference", "reference", 0.7, 0.8, 20, 1.5, 1.0, 42, 8192, 65_536, 16_777_216, "eval",
                          "yes_no", False, REFERENCE_JUDGE),
}
# Settings a config may override on top of its protocol (null: the protocol's value).
OVERRIDABLE = ("max_tokens", "temperature", "top_p", "top_k", "presence_penalty", "repetition_penalty", "seed",
               "min_pixels", "max_pixels")


@dataclass
class InferenceConfig:
    """How every evaluated model is asked: a protocol preset, plus any setting overridden on top of it."""

    protocol: Literal["fast", "reference"] = setting("fast", doc=(
        "reference: the published setting (system prompt + <answer> tags, T 0.7, top_p 0.8, top_k 20, presence 1.5, "
        "seed 42, 8192 tokens, 65,536..16,777,216 pixels, yes/no judge, no ZoomBench letter matching); fast: greedy, "
        "the student prompt, 256 tokens"))
    views: list[str] = listed("global", "regional", doc="global (the full image) and/or regional (the crop)")
    max_tokens: int | None = bounded(None, 1, doc="generation limit; null: the protocol's (reference 8192, fast 256)")
    temperature: float | None = bounded(None, 0.0, 2.0, doc="sampling temperature; 0: greedy; null: the protocol's")
    top_p: float | None = bounded(None, 0.0, 1.0, doc="nucleus sampling mass; null: the protocol's")
    top_k: int | None = bounded(None, -1, doc="keep the k most likely tokens (0/-1: off); null: the protocol's")
    presence_penalty: float | None = bounded(None, -2.0, 2.0, doc="presence penalty (0: off); null: the protocol's")
    repetition_penalty: float | None = bounded(None, 0.01, doc="repetition penalty (1: off); null: the protocol's")
    seed: int | None = setting(None, doc="sampling seed; null: the protocol's (reference 42)")
    min_pixels: int | None = bounded(None, 1, doc="image pixel floor for every model; null: the protocol's (fast: the model's)")
    max_pixels: int | None = bounded(None, 1, doc="image pixel ceiling for every model; null: the protocol's (fast: the model's)")

    def validate(self, where: str) -> None:
        bad = [v for v in self.views if v not in ("global", "regional")]
        if bad or not self.views:
            raise ConfigError(f"{where}.views must be a non-empty subset of ['global', 'regional'], got {self.views}")
        p = self.protocol_settings()
        if p.min_pixels is not None and p.max_pixels is not None and p.min_pixels > p.max_pixels:
            raise ConfigError(f"{where}: min_pixels {p.min_pixels} > max_pixels {p.max_pixels}")

    def overrides(self) -> dict:
        """The settings this config changes on top of its protocol."""
        preset = PROTOCOLS[self.protocol]
        return {k: getattr(self, k) for k in OVERRIDABLE if getattr(self, k) is not None and getattr(self, k) != getattr(preset, k)}

    def protocol_settings(self) -> Protocol:
        """The protocol with this config's overrides applied."""
        return dataclasses.replace(PROTOCOLS[self.protocol], **self.overrides())

    def describe(self) -> str:
        """The protocol's name, with its overrides: ``reference`` or ``fast (max_tokens=24)``."""
        extra = ", ".join(f"{k}={v}" for k, v in self.overrides().items())
        return f"{self.protocol} ({extra})" if extra else self.protocol


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
class AgentConfig:
    """The thinking-with-images baseline: each model may also answer as a zoom agent (view ``agent``).

    The model sees the full image and may call ``image_zoom_in_tool`` (a box on the first image) any
    number of times; each call's crop comes back as a new image in the next turn (``zwz_ray.eval.agent``).
    """

    enabled: bool = setting(False, doc="also evaluate the models as zoom agents (view `agent`), next to single-pass answers")
    max_turns: int = bounded(6, 1, 32, doc="model calls per item at most; the last one must answer (tool calls <= max_turns - 1)")
    coords: Literal["auto", "absolute", "relative1000"] = setting("auto", doc=(
        "bbox_2d convention; auto: by model family (Qwen3-VL: relative1000 = 0..1000; others: absolute = pixels of "
        "the processor-resized image, mapped back to the source)"))
    min_side: int = bounded(28, 1, doc="smallest side of a zoom box in source pixels; smaller boxes grow around their centre")
    upscale: float = bounded(2.0, 1.0, 8.0, doc="upscale of each crop (Lanczos, like the micro-crops), capped at the model's max_pixels")
    max_tokens: int = bounded(512, 16, doc="generation limit per turn (inference.max_tokens is the single-pass limit)")
    grammar: bool | Literal["auto"] = setting("auto", doc=(
        "on/off: constrain every turn to one tool call or one <answer> (EBNF; the last turn: the answer); auto: on for "
        "random-weight tiny:* models only"))
    models: list[str] = listed(doc="model labels run as agents; empty: every model")


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
    inference: InferenceConfig = section(InferenceConfig, doc="the evaluation protocol (reference | fast), views, and settings overridden on top of it")
    coverage: CoverageConfig = section(CoverageConfig, doc="attention coverage")
    agent: AgentConfig = section(AgentConfig, doc="the zoom-agent (thinking with images) baseline")
    output: OutputConfig = section(OutputConfig, doc="predictions, metrics and report")
    ray: RayConfig = section(RayConfig, doc="the Ray runtime")
    serving: ServingConfig = section(ServingConfig, doc=(
        "how the LLM judge runs: serve (default): ONE Ray Serve deployment (judge.resources, min..max replicas), "
        "started when the job first has answers to judge and deleted when it ends, the judge stage its light "
        "client; actors: the judge stage loads its own copy in its actor pool. The evaluated models always "
        "answer in their own actor pools"))
    suite: list[BenchmarkConfig] = section(list, doc=(
        "several benchmarks in one job (zwz_ray.eval.benchmarks.suite): `benchmark` is then unused, each model loads "
        "once for all of them, report.md / summary.csv hold one row per model"))

    def validate(self, where: str) -> None:
        if self.suite:
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
        unknown = sorted(set(self.agent.models) - set(labels))
        if unknown:
            raise ConfigError(f"{where}.agent.models: {unknown} are not among the models {labels}")


def suite_key(b: BenchmarkConfig) -> str:
    """The folder and table key of one benchmark: its name, else its preset, else its file or folder name."""
    raw = b.name or b.preset or os.path.basename(b.path.rstrip("/")).rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "benchmark"


def check_suite(cfg: EvalConfig, where: str) -> None:
    keys = [suite_key(b) for b in cfg.suite]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ConfigError(f"{where}.suite: benchmarks {dupes} repeat; give each a distinct `name`")
    if cfg.coverage.enabled:
        raise ConfigError(f"{where}.coverage: attention coverage is measured on one benchmark; run it without `suite`")
