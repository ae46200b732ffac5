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
CLUSTER_CHOICES = {"difficulty.max_tokens"}  # the judge of undecided student answers is served once, shared with consensus
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
    assert c.input.sample_seed == 42
    assert c.overlay.separator == c.mcq.block_separator == "\n\n"
    assert c.overlay.instruction.startswith("Answer using only what lies inside the red bounding box")
    assert c.mcq.instruction == "Answer with the option's letter from the given choices." and c.mcq.option_format == "{letter}. {text}"
    assert (c.difficulty.k, c.difficulty.temperature, c.difficulty.max_correct) == (4, 1.0, 1)
    assert (c.validation.top_p, c.answers.top_p, c.mcq.temperature, c.mcq.max_tokens) == (0.9, 0.9, 0.8, 1024)
    assert c.answers.frame == c.validation.frame == c.mcq.frame == c.difficulty.frame == "free"
    assert (c.consensus.mode, c.consensus.judge_temperature) == ("holistic", 0.3)
    assert c.difficulty.max_tokens >= 16384 and c.difficulty.judge and c.difficulty.on_error == "drop"


@pytest.mark.parametrize("name", ["laptop.yaml", "cluster.yaml", "reference.yaml"])
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


# --------------------------------------------------------------------------- the two GPU line-ups

# The paper's values, stated in the reference scripts; both GPU configs must keep every one.
PAPER_THRESHOLDS = {
    "input.min_side": 1200, "input.sample_seed": 42, "proposal.min_chars": 2, "proposal.max_chars": 49,
    "proposal.min_objects": 3, "proposal.temperature": 0.7, "models.grounding.instance_threshold": 0.5,
    "models.grounding.score_threshold": 0.75, "crop.max_area_frac": 0.10, "crop.upscale": 2.0, "questions.n": 3,
    "questions.n_examples": 15, "questions.temperature": 0.9, "questions.top_p": 0.8, "validation.temperature": 0.3,
    "answers.samples_per_teacher": 4, "answers.temperature": 0.7, "consensus.threshold": 0.75, "overlay.expand_frac": 0.05,
    "overlay.width": 5, "mcq.n_distractors": 3, "difficulty.k": 4, "difficulty.temperature": 1.0, "difficulty.max_correct": 1,
}


def _load(name: str) -> SynthConfig:
    return load_config(SynthConfig, str(CONFIGS / name))


@pytest.mark.parametrize("name", ["cluster.yaml", "reference.yaml"])
def test_gpu_configs_keep_the_papers_thresholds(name):
    flat = dict(_flat(to_dict(_load(name))))
    assert {k: flat[k] for k in PAPER_THRESHOLDS} == PAPER_THRESHOLDS
    paper = dict(_flat(to_dict(defaults())))
    allowed = CLUSTER_CHOICES if name == "cluster.yaml" else set()  # the affordable line-up's named departures
    assert {k for k in paper if k.split(".")[0] in PAPER_SECTIONS and flat[k] != paper[k]} == allowed


def test_reference_config_is_the_papers_line_up():
    m = _load("reference.yaml").models
    qwen235 = "Qwen/Qwen3-VL-235B-A22B-Instruct"
    assert m.teacher.model == qwen235  # question writer, validator and distractor writer
    assert [a.model for a in m.answerers] == [qwen235, "zai-org/GLM-4.5V"]
    assert m.judge.backend == "openai" and m.judge.model.endswith("Kimi-K2-Instruct") and m.judge.base_url
    assert m.student.model == "Qwen/Qwen3-VL-8B-Instruct"
    assert (m.grounding.backend, m.grounding.model) == ("sam3", "facebook/sam3")
    plan_models = _plan_models("reference.yaml")
    assert plan_models["questions"] == plan_models["validation"] == plan_models["distractors"] == ("qwen3-vl-235b-a22b",)
    assert plan_models["answers_1"] == ("qwen3-vl-235b-a22b",) and plan_models["answers_2"] == ("glm-4.5v",)
    assert plan_models["consensus"] == ("kimi-k2-instruct",) and plan_models["difficulty"] == ("qwen3-vl-8b",)


def test_cluster_config_is_the_affordable_line_up():
    m = _load("cluster.yaml").models
    assert m.teacher.model == "Qwen/Qwen3-VL-32B-Instruct"
    assert [a.model for a in m.answerers] == ["Qwen/Qwen3-VL-32B-Instruct", "Qwen/Qwen2.5-VL-72B-Instruct"]
    assert m.judge.model == "Qwen/Qwen3-32B" and m.student.model == "Qwen/Qwen3-VL-8B-Instruct"
    gpus = {name: sum(e.resources.num_gpus * e.resources.min_replicas for e in [m.teacher, *m.answerers, m.student])
            + m.grounding.resources.num_gpus + m.judge.resources.num_gpus
            for name, m in (("cluster", m), ("reference", _load("reference.yaml").models))}
    assert gpus["cluster"] < gpus["reference"]


def _plan_models(name: str) -> dict:
    from zwz_ray.synth.plan import build_synthesis

    return {s.name: s.models for s in build_synthesis(_load(name)).stages}


# --------------------------------------------------------------------------- input.max_images: the usable subset


def _pool(folder: Path) -> dict[str, set[str]]:
    """12 usable images (sides > 100), 10 too small, 8 unreadable (garbage, truncated, empty)."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    kinds: dict[str, set[str]] = {"usable": set(), "small": set(), "bad": set()}
    for i in range(12):
        path = folder / f"ok_{i:02d}.png"
        Image.new("RGB", (120 + i, 130), (i * 20, 50, 90)).save(path)
        kinds["usable"].add(str(path))
    for i in range(10):
        path = folder / f"small_{i:02d}.jpg"
        Image.new("RGB", (100, 400), (10, i * 20, 30)).save(path)  # one side == min_side: too small
        kinds["small"].add(str(path))
    png = (folder / "ok_00.png").read_bytes()
    for i in range(8):
        path = folder / f"bad_{i:02d}.png"
        path.write_bytes([b"not an image at all", png[:20], b""][i % 3] + bytes(i))
        kinds["bad"].add(str(path))
    return kinds


def _input(folder: Path, n: int | None, **kw) -> SynthConfig:
    sets = [f"input.paths=[{folder}]", "input.min_side=100", f"input.max_images={'null' if n is None else n}"]
    return load_config(SynthConfig, None, sets + [f"input.{k}={v}" for k, v in kw.items()])


def test_max_images_is_drawn_after_the_usable_filter(tmp_path):
    from zwz_ray.synth.stages import select_images

    kinds = _pool(tmp_path / "imgs")
    for n in (1, 5, 12):
        picked = select_images(_input(tmp_path / "imgs", n))
        assert len(picked) == n and set(picked) <= kinds["usable"], n  # N usable come out when N exist
    assert set(select_images(_input(tmp_path / "imgs", 20))) == kinds["usable"]  # fewer exist: all of them
    everything = select_images(_input(tmp_path / "imgs", None))  # no subset: stage 1 filters every image
    assert len(everything) == 30


def test_a_larger_subset_is_a_superset(tmp_path):
    from zwz_ray.synth.stages import select_images

    _pool(tmp_path / "imgs")
    subsets = [set(select_images(_input(tmp_path / "imgs", n, probe_threads=3, probe_batch=4))) for n in range(1, 13)]
    assert all(a < b for a, b in zip(subsets, subsets[1:]))
    other_seed = [set(select_images(_input(tmp_path / "imgs", 4, sample_seed=s))) for s in (42, 7)]
    assert other_seed[0] == subsets[3] and other_seed[0] != other_seed[1]


def test_header_reads_stop_at_n(tmp_path):
    """A pool of 200: picking 3 reads a handful of headers, in rank order, never the whole pool."""
    from PIL import Image

    from zwz_ray.images import list_images
    from zwz_ray.synth.stages.s01_image_pool import rank, usable_subset

    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(200):
        Image.new("RGB", (101 if i % 4 == 0 else 90, 120)).save(folder / f"{i:03d}.png")  # 1 in 4 usable
    sources = list_images([str(folder)])
    cfg = _input(folder, 3, probe_threads=4, probe_batch=8).input
    subset = usable_subset(sources, cfg)
    order = rank(sources, cfg.sample_seed)
    last = max(order.index(s) for s in subset.sources)
    assert len(subset.sources) == 3 and subset.probed <= last + 1 + cfg.probe_batch and subset.probed < 40
    usable = {s for s in sources if int(Path(s).stem) % 4 == 0}
    assert subset.rejected == {"too_small": sum(s not in usable for s in order[:subset.probed])}
    # the picks are the first 3 usable images in rank order
    assert subset.sources == sorted([s for s in order if s in usable][:3])


def test_header_check_reads_past_a_long_header(tmp_path):
    """A JPEG whose size field lies beyond the first 64 KiB (a large ICC profile) is still measured."""
    from PIL import Image

    from zwz_ray.synth.stages.s01_image_pool import HEADER_BYTES, header_check

    path = tmp_path / "icc.jpg"
    Image.new("RGB", (150, 160)).save(path, icc_profile=bytes(range(256)) * 600)
    assert path.stat().st_size > HEADER_BYTES
    cfg = _input(tmp_path, 1).input
    assert header_check(str(path), cfg) is None
    assert header_check(str(path), _input(tmp_path, 1, min_side=150).input) == "too_small"
    assert header_check(str(tmp_path / "gone.png"), cfg) in ("not_found", "read_error")
