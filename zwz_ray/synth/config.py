"""``SynthConfig``: every knob of R2I data synthesis, with the paper's values as defaults.

One section per stage (``proposal``, ``grounding`` ... ``difficulty``) holds that stage's
thresholds and sampling settings; ``models`` holds the engines; ``input`` / ``output`` the data.
Load it with ``load_config(SynthConfig, path, overrides)`` or from the command line
(``python -m pipelines.synthesize --config FILE --set consensus.threshold=0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zwz_ray.config import (
    ConfigError,
    EngineConfig,
    RayConfig,
    ResourcesConfig,
    bounded,
    listed,
    model_ref,
    section,
    setting,
    uri,
    uri_list,
)
from zwz_ray.engines.serving import ServingConfig
from zwz_ray.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from zwz_ray.prompts import MCQ_INSTRUCTION, OPTION_FORMAT, RED_BOX_INSTRUCTION, mcq_problem


@dataclass
class InputConfig:
    """Stage 1 (image pool): where the images are and which ones are usable."""

    paths: list[str] = uri_list(doc="local folders (recursive), files, globs or fsspec URIs (s3://...)")
    min_side: int = bounded(1200, 0, doc="reject images whose width OR height is <= this (paper: 1200)")
    max_images: int | None = setting(None, doc=(
        "a seeded random subset of this many USABLE images (drawn after the size/readability filter, as the paper); "
        "null: every image"))
    sample_seed: int = setting(42, doc="seed of that subset (paper: 42; a larger max_images gives a superset)")
    probe_threads: int = bounded(16, 1, doc="max_images: image headers read in parallel on the driver")
    probe_batch: int = bounded(64, 1, doc="max_images: most headers read per round (in rank order, stops at max_images usable)")
    max_pixels: int = bounded(DEFAULT_MAX_PIXELS, 1, doc="refuse to decode larger images (decompression bombs)")
    max_bytes: int = bounded(DEFAULT_MAX_BYTES, 1, doc="refuse to read larger files")
    generate_demo: bool | Literal["auto"] = setting(False, doc=(
        "laptop: write the demo scenes (see `demo`) and add them to `paths`; auto = only when `paths` is empty"))

    @property
    def demo_enabled(self) -> bool:
        """Whether this run writes and uses the demo scenes (``auto``: only when no path is given)."""
        return self.generate_demo is True or (self.generate_demo == "auto" and not self.paths)


@dataclass
class DemoConfig:
    """Offline demo scenes (zwz_ray.demo), used only when ``input.generate_demo`` turns them on."""

    dir: str = uri("outputs/demo_images", doc="folder the demo scenes are written to")
    n: int = bounded(3, 1, doc="number of scenes")
    seed: int = setting(0, doc="seed of the scenes")
    width: int = bounded(1600, 64, doc="scene width in pixels")
    height: int = bounded(1280, 64, doc="scene height in pixels")


@dataclass
class OutputConfig:
    """Where kept rows, drops, stats and the resume manifest go."""

    dir: str = uri("outputs/synth", doc="kept/, drops/, stats.json and manifest.jsonl: local path or fsspec URI")
    chunk_size: int = bounded(64, 1, doc="images per committed chunk (the unit of resume)")
    overwrite: bool = setting(False, doc="delete what output.dir holds before starting")


@dataclass
class GroundingModelConfig:
    """Stage 3 grounder: SAM3 (text-prompted segmentation) or the teacher VLM itself."""

    backend: Literal["sam3", "vlm"] = setting("sam3", doc="sam3 (text-prompted segmentation) or vlm (models.teacher draws the box)")
    model: str = model_ref("facebook/sam3", doc="sam3 backend: the SAM3 model reference (the vlm backend uses models.teacher)")
    device: str = setting("auto", doc="auto | cpu | cuda | cuda:N")
    instance_threshold: float = bounded(0.5, 0.0, 1.0, doc="a detection scoring above this counts as an instance")
    score_threshold: float = bounded(0.75, 0.0, 1.0, doc="the single instance must score at least this")
    max_prompts_per_forward: int = bounded(16, 1, doc="object names grounded in one SAM3 forward pass")
    coords: Literal["absolute", "relative1000"] = setting("absolute", doc="vlm backend: Qwen2.5-VL pixels (absolute) or Qwen3-VL 0..1000")
    resize_factor: int = bounded(28, 1, doc="vlm backend, absolute coords: image sides are made multiples of this")
    resources: ResourcesConfig = section(ResourcesConfig, doc="scheduling of the grounding actor pool")


NAMED = " (a model section, or the name of one under `engines`)"


@dataclass
class ModelsConfig:
    """The engines of synthesis. Each is a model section or the name of one under ``engines``: stages
    naming the same model (or holding identical sections) share one served deployment."""

    teacher: EngineConfig | str = section(EngineConfig, doc="the teacher VLM: proposal, questions, validation, distractors" + NAMED)
    answerers: list[EngineConfig | str] = section(lambda: [EngineConfig()], doc="teachers that sample answers for consensus "
                                                  "(paper: 2)" + NAMED)
    judge: EngineConfig | str | None = setting(None, doc="text LLM judge of stage 8 (consensus) and stage 11 (undecided "
                                               "student answers); null: the normaliser only, undecided counts as wrong" + NAMED)
    grounding: GroundingModelConfig = section(GroundingModelConfig, doc="the stage 3 grounder")
    student: EngineConfig | str | None = section(EngineConfig, doc="the student of the difficulty filter" + NAMED)

    def resolve(self, engines: dict[str, EngineConfig]) -> None:
        """Replace every model name by its section under ``engines`` (its label defaults to the name)."""
        self.teacher = resolve_model(self.teacher, engines, "models.teacher")
        self.answerers = [resolve_model(a, engines, f"models.answerers[{i}]") for i, a in enumerate(self.answerers)]
        self.judge = resolve_model(self.judge, engines, "models.judge")
        self.student = resolve_model(self.student, engines, "models.student")


def resolve_model(value: EngineConfig | str | None, engines: dict[str, EngineConfig], where: str) -> EngineConfig | None:
    """``value`` as a model section: a name is looked up in ``engines`` (with a close-match hint)."""
    if not isinstance(value, str):
        return value
    if value not in engines:
        import difflib

        known = sorted(engines)
        close = difflib.get_close_matches(value, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where} names the model {value!r}, which `engines` does not define (it defines {known}){hint}")
    section_ = engines[value]
    if not section_.name:
        section_.name = value
    return section_


@dataclass
class ProposalConfig:
    """Stage 2: the teacher lists objects that appear once."""

    max_objects: int = bounded(20, 1, doc="object names kept per image")
    min_chars: int = bounded(2, 1, doc="shorter names are discarded")
    max_chars: int = bounded(49, 1, doc="longer names are discarded")
    min_objects: int = bounded(3, 1, doc="drop the image when fewer names remain (paper: <= 2 objects is dropped)")
    temperature: float = bounded(0.7, 0.0, doc="sampling temperature")
    top_p: float = bounded(0.8, 0.0, 1.0, doc="nucleus sampling mass")
    max_tokens: int = bounded(512, 1, doc="generation limit")


@dataclass
class CropConfig:
    """Stage 4: micro-crop."""

    max_area_frac: float = bounded(0.10, 0.0, 1.0, doc="drop boxes covering >= this fraction of the image (paper: 0.10)")
    upscale: float = bounded(2.0, 1.0, doc="Lanczos upscale factor of the crop")


FRAME_DOC = ("free: the paper's free text, read afterwards; boxed_grammar: an EBNF grammar constrains only the reply's "
             "frame (bounded reasoning, then the boxed answer), for models that never stop on their own (random tiny models)")


@dataclass
class QuestionsConfig:
    """Stage 5: question generation on the crop (the teacher is not told the object's name)."""

    n: int = bounded(3, 1, doc="questions asked per crop")
    n_examples: int = bounded(15, 0, doc="example questions shown in the prompt (paper: 15 sampled from the seed list)")
    seed_file: str | None = uri(None, doc="one example question per line; null: the packaged list")
    temperature: float = bounded(0.9, 0.0, doc="sampling temperature (paper: 0.9)")
    top_p: float = bounded(0.8, 0.0, 1.0, doc="nucleus sampling mass (paper: 0.8)")
    max_tokens: int = bounded(512, 1, doc="generation limit")


@dataclass
class ValidationConfig:
    """Stage 6: the teacher checks a question on the full image and the crop, reasoning step by step."""

    temperature: float = bounded(0.3, 0.0, doc="sampling temperature (paper: 0.3)")
    top_p: float = bounded(0.9, 0.0, 1.0, doc="nucleus sampling mass (paper: 0.9)")
    max_tokens: int = bounded(2048, 1, doc="generation limit; the reasoning is not capped otherwise (paper: no cap)")
    frame: Literal["free", "verdict_grammar"] = setting(
        "free", doc="free: the paper's free reasoning, the first 'VALID: Yes/No' line decides; verdict_grammar: a grammar "
        "constrains the reply to bounded reasoning then that line (random tiny models)")
    frame_reasoning_chars: int = bounded(1500, 1, doc="verdict_grammar frame only: most characters of reasoning")


@dataclass
class AnswersConfig:
    """Stage 7: every answerer samples ``samples_per_teacher`` answers in one request."""

    samples_per_teacher: int = bounded(4, 1, doc="answers sampled per answerer (paper: 4 x 2 teachers)")
    temperature: float = bounded(0.7, 0.0, doc="sampling temperature (paper: 0.7)")
    top_p: float = bounded(0.9, 0.0, 1.0, doc="nucleus sampling mass (paper: 0.9)")
    max_tokens: int = bounded(8192, 1, doc="generation limit: free step-by-step reasoning, then the boxed answer (paper: no cap)")
    frame: Literal["free", "boxed_grammar"] = setting("free", doc=FRAME_DOC)
    frame_reasoning_chars: int = bounded(2000, 0, doc="boxed_grammar frame only: most characters of reasoning")
    answer_max_chars: int = bounded(300, 1, doc="boxed_grammar frame only: most characters in the box (a sign, a plate, a sentence)")


@dataclass
class ConsensusConfig:
    """Stage 8: keep the question when the largest group of equivalent answers is big enough.

    ``early_stop`` lives here, not in AnswersConfig: it is this stage's arithmetic (threshold, judge or
    not) applied early; the later answerer stages only ask it whether a question is already lost."""

    threshold: float = bounded(0.75, 0.0, 1.0, doc="smallest fraction of answers in the largest equivalent group (paper: 6 of 8)")
    mode: Literal["holistic", "pairwise", "normalizer"] = setting(
        "holistic", doc="after the normaliser's first pass: holistic (paper: one judge call sees all samples and returns the "
        "majority answer and its count, guarded against the samples), pairwise (the judge compares group representatives "
        "two at a time, merged transitively) or normalizer (no judge); without models.judge: normalizer")
    judge_temperature: float = bounded(0.3, 0.0, doc="holistic judge: sampling temperature (paper: 0.3)")
    judge_top_p: float = bounded(1.0, 0.0, 1.0, doc="holistic judge: nucleus sampling mass")
    judge_max_tokens: int = bounded(1024, 1, doc="holistic judge: generation limit (reasoning, then the majority and its count)")
    judge_reasoning_chars: int = bounded(2000, 0, doc="holistic judge: most characters of reasoning before the verdict")
    pairwise_max_tokens: int = bounded(16, 1, doc="pairwise mode: generation limit of one same/different verdict")
    early_stop: Literal["off", "exact", "normalizer"] = setting(
        "exact", doc="a later answerer skips a question its samples can no longer save (dropped as no_consensus, as full "
        "sampling would): off (every answerer samples every question), exact (skip only when no remaining samples and no "
        "judge verdict could reach the threshold: kept rows are unchanged) or normalizer (the normaliser's bound even "
        "with a judge, which might have merged distinct spellings: an approximation that skips more)")


@dataclass
class OverlayConfig:
    """Stage 9: red box on the full image and the question rewrite."""

    expand_frac: float = bounded(0.05, 0.0, doc="the drawn box is the grounded box grown by this fraction")
    width: int = bounded(5, 1, doc="line width in pixels")
    color: list[int] = listed(255, 0, 0, doc="RGB colour of the box")
    instruction: str = setting(RED_BOX_INSTRUCTION, doc="appended to the question: only what is inside the red box counts")
    separator: str = setting("\n\n", doc="between the question and the instruction (paper: a blank line; compact: \"\\n\")")

    def validate(self, where: str) -> None:
        if len(self.color) != 3 or not all(0 <= c <= 255 for c in self.color):
            raise ConfigError(f"{where}.color must be three integers 0..255, got {self.color}")
        if not self.instruction.strip():
            raise ConfigError(f"{where}.instruction is empty: the student must be told the red box is what matters")


@dataclass
class MCQConfig:
    """Stage 10: teacher-written distractors, shuffled with the answer (seeded)."""

    n_distractors: int = bounded(3, 1, 25, doc="wrong options per question")
    seed: int = setting(0, doc="seed of the option order")
    temperature: float = bounded(0.8, 0.0, doc="distractors: sampling temperature (paper: 0.8)")
    top_p: float = bounded(1.0, 0.0, 1.0, doc="distractors: nucleus sampling mass")
    max_tokens: int = bounded(1024, 1, doc="distractors: generation limit (paper: 1024)")
    max_attempts: int = bounded(3, 1, doc="distractor requests per question while fewer than n_distractors usable ones "
                                "came back (paper: retried until they do, without a bound)")
    frame: Literal["free", "boxed_grammar"] = setting("free", doc=FRAME_DOC + "; one box per distractor")
    frame_reasoning_chars: int = bounded(300, 0, doc="boxed_grammar frame only: most characters of reasoning")
    option_max_chars: int = bounded(300, 1, doc="boxed_grammar frame only: most characters of one distractor")
    # The problem's layout (assembly); the paper's: question, blank line, "A. x" per line, blank line, instruction.
    instruction: str = setting(MCQ_INSTRUCTION, doc="the problem's last line, asking for the option's letter")
    block_separator: str = setting("\n\n", doc="between question, options and instruction (paper: a blank line; compact: \"\\n\")")
    option_format: str = setting(OPTION_FORMAT, doc="one option line; {letter} and {text} are filled in")

    def validate(self, where: str) -> None:
        try:
            mcq_problem("Q?", ["x", "y"], self.instruction, self.block_separator, self.option_format)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


@dataclass
class DifficultyConfig:
    """Stage 11: the student answers K times, reasoning; items it already gets right are too easy."""

    enabled: bool = setting(True, doc="run the difficulty filter (needs models.student)")
    k: int = bounded(4, 1, doc="student samples per item (paper: 4)")
    temperature: float = bounded(1.0, 0.0, doc="sampling temperature (paper: 1.0)")
    top_p: float = bounded(1.0, 0.0, 1.0, doc="nucleus sampling mass")
    max_correct: int = bounded(1, 0, doc="drop the item when more samples than this are correct (paper: >= 2 is too easy)")
    max_tokens: int = bounded(20000, 1, doc="generation limit: step-by-step reasoning, then the boxed letter (paper: about 20K)")
    frame: Literal["free", "boxed_grammar"] = setting("free", doc=FRAME_DOC + "; the box holds one option letter")
    frame_reasoning_chars: int = bounded(2000, 0, doc="boxed_grammar frame only: most characters of reasoning")
    extraction: Literal["default", "eval", "grpo", "boxed"] = setting(
        "default", doc="how the student's answer is found (zwz_ray.replies.extract_answer policy); default: <answer>, "
        "then \\boxed{}, then an 'Answer:' line, then the last line")
    judge: bool = setting(True, doc="samples the rules leave undecided go to models.judge (an LLM judge; it runs inside the "
                          "difficulty actors, so an openai-backend endpoint is the cheap choice); false or no judge: undecided is wrong")
    judge_max_tokens: int = bounded(64, 1, doc="generation limit of the judge's yes/no decision")
    on_error: Literal["drop", "keep"] = setting(
        "drop", doc="a failed student call: drop (an engine_error drop, like every failed model call) or keep (the "
        "reference: the row is kept with difficulty_checked false and counted under the stage's 'unchecked' flag)")


@dataclass
class CPUStagesConfig:
    """Scheduling of the CPU stages (decode, crop, overlay, output): many small tasks."""

    num_cpus: float = bounded(1.0, 0.0, doc="CPUs per task")
    batch_size: int = bounded(4, 1, doc="rows per map_batches call")


@dataclass
class ReliabilityConfig:
    """What a transient failure costs: how often an image is retried, when a failing model stops the job."""

    max_attempts: int = bounded(3, 1, doc="runs an image with a retryable drop (engine error, stage crash) gets before the drop is final")
    breaker_window: int = bounded(20, 1, doc="model calls (requests) per actor over which the error share is measured")
    breaker_error_share: float = bounded(0.5, 0.0, 1.0, doc="stop the job when more than this share of the window failed; 1: never")


@dataclass
class SynthConfig:
    """R2I data synthesis, one section per paper stage."""

    input: InputConfig = section(InputConfig, doc="stage 1: the image pool")
    output: OutputConfig = section(OutputConfig, doc="kept rows, drops, stats and the resume manifest")
    engines: dict[str, EngineConfig] = section(dict, doc="named model sections that `models` refers to by name; each "
                                               "model is served once, however many stages use it")
    models: ModelsConfig = section(ModelsConfig, doc="the engines")
    serving: ServingConfig = section(ServingConfig, doc="each model one Ray Serve deployment, or one copy per stage")
    proposal: ProposalConfig = section(ProposalConfig, doc="stage 2: object proposal")
    crop: CropConfig = section(CropConfig, doc="stage 4: micro-crop")
    questions: QuestionsConfig = section(QuestionsConfig, doc="stage 5: question generation")
    validation: ValidationConfig = section(ValidationConfig, doc="stage 6: question validation")
    answers: AnswersConfig = section(AnswersConfig, doc="stage 7: answer sampling")
    consensus: ConsensusConfig = section(ConsensusConfig, doc="stage 8: consensus filter")
    overlay: OverlayConfig = section(OverlayConfig, doc="stage 9: red box overlay")
    mcq: MCQConfig = section(MCQConfig, doc="stage 10: multiple-choice assembly")
    difficulty: DifficultyConfig = section(DifficultyConfig, doc="stage 11: difficulty filter")
    cpu: CPUStagesConfig = section(CPUStagesConfig, doc="scheduling of the CPU stages")
    ray: RayConfig = section(RayConfig, doc="the Ray runtime")
    demo: DemoConfig = section(DemoConfig, doc="offline demo scenes (laptop)")
    reliability: ReliabilityConfig = section(ReliabilityConfig, doc="retries of transient failures, circuit breaker")

    def validate(self, where: str) -> None:
        self.models.resolve(self.engines)
        if not self.models.answerers:
            raise ConfigError("models.answerers needs at least one engine (paper: 2 teachers)")
        if self.difficulty.enabled and self.models.student is None:
            raise ConfigError("difficulty.enabled is true but models.student is not set")
        if self.proposal.min_chars > self.proposal.max_chars:
            raise ConfigError(f"proposal.min_chars ({self.proposal.min_chars}) > proposal.max_chars ({self.proposal.max_chars})")
