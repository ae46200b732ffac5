"""``SynthConfig``: every knob of R2I data synthesis, with the paper's values as defaults.

One section per stage (``proposal``, ``grounding`` ... ``difficulty``) holds that stage's
thresholds and sampling settings; ``models`` holds the engines; ``input`` / ``output`` the data.
Load it with ``load_config(SynthConfig, path, overrides)`` or from the command line
(``python -m pipelines.synthesize --config FILE --set consensus.threshold=0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zwz_ray.config import ConfigError, EngineConfig, RayConfig, ResourcesConfig, bounded, listed, uri
from zwz_ray.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS


@dataclass
class InputConfig:
    """Stage 1 (image pool): where the images are and which ones are usable."""

    paths: list[str] = listed()  # local folders (recursive), files, globs or fsspec URIs (s3://...)
    min_side: int = bounded(1200, 0)  # reject images whose width OR height is <= this (paper: 1200)
    max_images: int | None = None  # optional random subset of this size
    sample_seed: int = 0  # seed of that subset (a larger max_images gives a superset)
    max_pixels: int = bounded(DEFAULT_MAX_PIXELS, 1)  # refuse to decode larger images (decompression bombs)
    max_bytes: int = bounded(DEFAULT_MAX_BYTES, 1)  # refuse to read larger files
    generate_demo: bool = False  # laptop only: write the demo scenes (see `demo`) and add them to `paths`


@dataclass
class DemoConfig:
    """Offline demo scenes (zwz_ray.demo), used only when ``input.generate_demo`` is true."""

    dir: str = "outputs/demo_images"
    n: int = bounded(3, 1)
    seed: int = 0
    width: int = bounded(1600, 64)
    height: int = bounded(1280, 64)


@dataclass
class OutputConfig:
    """Where kept rows, drops, stats and the resume manifest go."""

    dir: str = uri("outputs/synth")  # local path or fsspec URI
    chunk_size: int = bounded(64, 1)  # images per committed chunk (the unit of resume)
    overwrite: bool = False  # true: delete what output.dir holds before starting


@dataclass
class GroundingModelConfig:
    """Stage 3 grounder: SAM3 (text-prompted segmentation) or the teacher VLM itself."""

    backend: Literal["sam3", "vlm"] = "sam3"
    model: str = "facebook/sam3"  # sam3 backend only; the vlm backend uses models.teacher
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    instance_threshold: float = bounded(0.5, 0.0, 1.0)  # a detection above this counts as an instance
    score_threshold: float = bounded(0.75, 0.0, 1.0)  # the single instance must score at least this
    max_prompts_per_forward: int = bounded(16, 1)  # object names grounded in one SAM3 forward pass
    coords: Literal["absolute", "relative1000"] = "absolute"  # vlm backend: Qwen2.5-VL pixels / Qwen3-VL 0..1000
    resize_factor: int = bounded(28, 1)  # vlm backend, absolute coords: image sides are made multiples of this
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


@dataclass
class ModelsConfig:
    teacher: EngineConfig = field(default_factory=EngineConfig)
    answerers: list[EngineConfig] = field(default_factory=lambda: [EngineConfig()])  # paper: 2 teachers
    judge: EngineConfig | None = None  # text LLM for answer equivalence; None: normaliser only
    grounding: GroundingModelConfig = field(default_factory=GroundingModelConfig)
    student: EngineConfig | None = field(default_factory=EngineConfig)  # difficulty filter


@dataclass
class ProposalConfig:
    """Stage 2: the teacher lists objects that appear once."""

    max_objects: int = bounded(20, 1)
    min_chars: int = bounded(2, 1)
    max_chars: int = bounded(49, 1)
    min_objects: int = bounded(3, 1)  # drop the image when fewer remain (paper: <= 2 objects is dropped)
    temperature: float = bounded(0.7, 0.0)
    top_p: float = bounded(0.8, 0.0, 1.0)
    max_tokens: int = bounded(512, 1)


@dataclass
class CropConfig:
    """Stage 4: micro-crop."""

    max_area_frac: float = bounded(0.10, 0.0, 1.0)  # drop boxes covering >= this fraction of the image
    upscale: float = bounded(2.0, 1.0)  # Lanczos upscale of the crop


@dataclass
class QuestionsConfig:
    """Stage 5: question generation on the crop."""

    n: int = bounded(3, 1)
    n_examples: int = bounded(15, 0)
    seed_file: str | None = None  # one example question per line; None: the packaged list
    temperature: float = bounded(0.9, 0.0)
    top_p: float = bounded(0.8, 0.0, 1.0)
    max_tokens: int = bounded(512, 1)


@dataclass
class ValidationConfig:
    """Stage 6: the teacher checks a question on the full image and the crop."""

    temperature: float = bounded(0.3, 0.0)
    top_p: float = bounded(1.0, 0.0, 1.0)
    max_tokens: int = bounded(512, 1)


@dataclass
class AnswersConfig:
    """Stage 7: every answerer samples ``samples_per_teacher`` answers in one request."""

    samples_per_teacher: int = bounded(4, 1)
    temperature: float = bounded(0.7, 0.0)
    top_p: float = bounded(1.0, 0.0, 1.0)
    max_tokens: int = bounded(768, 1)


@dataclass
class ConsensusConfig:
    """Stage 8: keep the question when the largest group of equivalent answers is big enough."""

    threshold: float = bounded(0.75, 0.0, 1.0)  # paper: 6 of 8
    judge_max_tokens: int = bounded(16, 1)


@dataclass
class OverlayConfig:
    """Stage 9: red box on the full image and the question rewrite."""

    expand_frac: float = bounded(0.05, 0.0)
    width: int = bounded(5, 1)
    color: list[int] = listed(255, 0, 0)

    def validate(self, where: str) -> None:
        if len(self.color) != 3 or not all(0 <= c <= 255 for c in self.color):
            raise ConfigError(f"{where}.color must be three integers 0..255, got {self.color}")


@dataclass
class MCQConfig:
    """Stage 10: teacher-written distractors, shuffled with the answer (seeded)."""

    n_distractors: int = bounded(3, 1, 25)
    seed: int = 0
    temperature: float = bounded(0.7, 0.0)
    top_p: float = bounded(1.0, 0.0, 1.0)
    max_tokens: int = bounded(256, 1)


@dataclass
class DifficultyConfig:
    """Stage 11: the student answers K times; items it already gets right are too easy."""

    enabled: bool = True
    k: int = bounded(4, 1)
    temperature: float = bounded(1.0, 0.0)
    top_p: float = bounded(1.0, 0.0, 1.0)
    max_correct: int = bounded(1, 0)  # drop the item when more than this many samples are correct (paper: >= 2)
    max_tokens: int = bounded(32, 1)


@dataclass
class CPUStagesConfig:
    """Scheduling of the CPU stages (decode, crop, overlay, output): many small tasks."""

    num_cpus: float = bounded(1.0, 0.0)
    batch_size: int = bounded(4, 1)


@dataclass
class SynthConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    questions: QuestionsConfig = field(default_factory=QuestionsConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    answers: AnswersConfig = field(default_factory=AnswersConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    mcq: MCQConfig = field(default_factory=MCQConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    cpu: CPUStagesConfig = field(default_factory=CPUStagesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    def validate(self, where: str) -> None:
        if not self.models.answerers:
            raise ConfigError("models.answerers needs at least one engine (paper: 2 teachers)")
        if self.difficulty.enabled and self.models.student is None:
            raise ConfigError("difficulty.enabled is true but models.student is not set")
        if self.proposal.min_chars > self.proposal.max_chars:
            raise ConfigError(f"proposal.min_chars ({self.proposal.min_chars}) > proposal.max_chars ({self.proposal.max_chars})")
