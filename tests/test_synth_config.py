"""SynthConfig: the paper's defaults, both shipped YAML files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zwz_ray.config import ConfigError, load_config, to_dict
from zwz_ray.synth.config import SynthConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "synth"
# Thresholds the laptop file relaxes because random weights cannot meet the paper's (README lists them).
RELAXED = {"models.grounding.model", "models.grounding.instance_threshold", "models.grounding.score_threshold",
           "proposal.min_objects", "crop.max_area_frac", "consensus.threshold"}
# Reply frames and budgets: random tiny models never close free text (laptop.yaml explains them).
FRAMES = {"validation.frame", "validation.frame_reasoning_chars", "validation.max_tokens", "answers.frame",
          "answers.frame_reasoning_chars", "answers.answer_max_chars", "consensus.judge_reasoning_chars",
          "consensus.judge_max_tokens", "mcq.frame", "mcq.frame_reasoning_chars", "mcq.option_max_chars", "mcq.max_tokens",
          "mcq.max_attempts", "difficulty.frame", "difficulty.frame_reasoning_chars", "difficulty.max_tokens"}
# The cluster config caps the student's reasoning (its context is 16K) and judges MCQ letters by rules only.
CLUSTER_CHOICES = {"difficulty.max_tokens", "difficulty.judge"}
PAPER_SECTIONS = ("proposal", "crop", "questions", "validation", "answers", "consensus", "overlay", "mcq", "difficulty")


def defaults() -> SynthConfig:
    return load_config(SynthConfig, None, ["input.paths=[images]"])


def test_defaults_are_the_papers():
    c = defaults()
    assert c.input.min_side == 1200
    assert (c.proposal.min_chars, c.proposal.max_chars, c.proposal.min_objects) == (2, 49, 3)
    assert c.models.grounding.score_threshold == 0.75 and c.models.grounding.backend == "sam3"
    assert (c.crop.max_area_frac, c.crop.upscale) == (0.10, 2.0)
    assert (c.questions.n, c.questions.n_examples, c.questions.temperature, c.questions.top_p) == (3, 15, 0.9, 0.8)
    assert c.validation.temperature == 0.3
    assert (c.answers.samples_per_teacher, c.answers.temperature) == (4, 0.7)
    assert c.consensus.threshold == 0.75
    assert (c.overlay.expand_frac, c.overlay.width, c.overlay.color) == (0.05, 5, [255, 0, 0])
    assert c.mcq.n_distractors == 3
    assert (c.difficulty.k, c.difficulty.temperature, c.difficulty.max_correct) == (4, 1.0, 1)
    assert (c.validation.top_p, c.answers.top_p, c.mcq.temperature, c.mcq.max_tokens) == (0.9, 0.9, 0.8, 1024)
    assert c.answers.frame == c.validation.frame == c.mcq.frame == c.difficulty.frame == "free"
    assert (c.consensus.mode, c.consensus.judge_temperature) == ("holistic", 0.3)
    assert c.difficulty.max_tokens >= 16384 and c.difficulty.judge and c.difficulty.on_error == "drop"


@pytest.mark.parametrize("name", ["laptop.yaml", "cluster.yaml"])
def test_shipped_configs_load_and_start_with_their_command(name):
    path = CONFIGS / name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "pipelines.synthesize" in first and name in first
    cfg = load_config(SynthConfig, str(path))
    assert cfg.models.judge is not None and len(cfg.models.answerers) == 2 and cfg.difficulty.enabled


def _flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_laptop_relaxes_only_the_documented_thresholds():
    laptop = dict(_flat(to_dict(load_config(SynthConfig, str(CONFIGS / "laptop.yaml")))))
    paper = dict(_flat(to_dict(defaults())))
    changed = {k for k in paper if k.split(".")[0] in PAPER_SECTIONS and laptop[k] != paper[k]}
    changed |= {k for k in ("models.grounding.model", "models.grounding.instance_threshold", "models.grounding.score_threshold")
                if laptop[k] != paper[k]}
    assert changed - {"answers.max_tokens"} == RELAXED | FRAMES
    text = (CONFIGS / "laptop.yaml").read_text()
    assert text.count("RELAXED") >= 3
    cluster = dict(_flat(to_dict(load_config(SynthConfig, str(CONFIGS / "cluster.yaml")))))
    assert {k for k in paper if k.split(".")[0] in PAPER_SECTIONS and cluster[k] != paper[k]} == CLUSTER_CHOICES
    assert cluster["difficulty.max_tokens"] >= 4096


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="did you mean 'threshold'"):
        load_config(SynthConfig, None, ["input.paths=[x]", "consensus.treshold=0.5"])
    with pytest.raises(ConfigError, match="models.student is not set"):
        load_config(SynthConfig, None, ["input.paths=[x]", "models.student=null"])
    with pytest.raises(ConfigError, match="above the maximum"):
        load_config(SynthConfig, None, ["input.paths=[x]", "consensus.threshold=1.5"])
