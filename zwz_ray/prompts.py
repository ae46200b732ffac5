"""Every prompt zwz-ray sends to a model, in one place.

``PROMPT_VERSION`` is recorded in every output row's provenance; bump it whenever a prompt's
wording changes (the golden snapshots in ``tests/golden/prompts`` make such changes visible).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

PROMPT_VERSION = "2026-11-24.1"

# --------------------------------------------------------------------------- student (train, eval, difficulty filter)

ANSWER_FORMAT = "Think briefly if needed, then give the final answer inside <answer></answer>."

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices."


def student_prompt(question: str) -> str:
    """What the student sees next to the image, at training and at evaluation time."""
    return f"{question.strip()}\n{ANSWER_FORMAT}"


GRPO_ANSWER_FORMAT = "First reason about the question step by step, then give the final answer inside <answer></answer>."


def grpo_prompt(problem: str) -> str:
    """GRPO rollouts: the kept row's problem with the instruction to reason, then answer in the tags the reward reads."""
    return f"{problem.strip()}\n{GRPO_ANSWER_FORMAT}"


def student_target(answer: str) -> str:
    """The SFT target for a distilled row: the answer in the tags the reward and the judge read."""
    return f"<answer>{answer.strip()}</answer>"


# --------------------------------------------------------------------------- teacher (data synthesis, stages 2-11)

QUESTION_TYPES = (
    "counting",
    "ocr",
    "color",
    "material",
    "structure",
    "object_identification",
    "spatial",
    "scene",
)

BOX_COORDS = ("absolute", "relative1000")

# Stage 6 shows the teacher two images, in this order.
VALIDATION_IMAGE_ORDER = ("full", "crop")

RED_BOX_INSTRUCTION = "Focus only on the objects inside the red box."


def proposal_prompt(max_objects: int = 20) -> str:
    """Stage 2: the teacher lists objects that occur exactly once in the image."""
    return (
        "List the distinct objects in this image that are clearly identifiable and appear exactly once.\n"
        "- Give each a short name of 1-4 words that singles it out, e.g. \"red umbrella\" or \"wall clock\".\n"
        "- Prefer small objects and fine details over large ones.\n"
        "- Skip anything that occurs more than once, is too blurry to recognise, or is background "
        "(sky, floor, wall, road).\n"
        f"- List at most {max_objects} objects; list none if nothing qualifies.\n"
        'Reply as JSON: {"objects": ["name", ...]}.'
    )


def grounding_query(name: str) -> str:
    """Stage 3: the text prompt for a text-prompted grounding model (a short noun phrase)."""
    return " ".join(str(name).split()).strip(" .,;:").lower()


def vlm_grounding_prompt(name: str, coords: str = "absolute") -> str:
    """Stage 3 with a VLM grounder: one box for ``name``.

    ``coords`` is ``"absolute"`` (pixels, Qwen2.5-VL) or ``"relative1000"`` (0..1000, Qwen3-VL).
    """
    if coords not in BOX_COORDS:
        raise ValueError(f"coords must be one of {BOX_COORDS}, got {coords!r}")
    scale = (
        "in pixel coordinates of this image"
        if coords == "absolute"
        else "on a 0-1000 scale relative to the image width and height"
    )
    return (
        f"Locate the {grounding_query(name)} in this image.\n"
        f"Give its bounding box as [x1, y1, x2, y2], {scale}: (x1, y1) is the top-left corner "
        "and (x2, y2) the bottom-right corner.\n"
        'Reply as JSON: {"box": [x1, y1, x2, y2]}.'
    )


def question_prompt(examples: list[str], n: int = 3, object_name: str | None = None) -> str:
    """Stage 5: the teacher sees only the crop and writes up to ``n`` questions."""
    subject = f", showing the {grounding_query(object_name)}" if object_name else ""
    lines = [
        f"This image is an enlarged close-up of a small region of a larger photo{subject}.",
        f"Write up to {n} questions about fine details visible here. Each question must:",
        "- have one short, concrete answer that can be read off this image: a number, a noun or "
        "short phrase, or a piece of text;",
        "- name its target precisely (by colour, position or nearby objects) so that it picks out "
        "the same thing in the full photo;",
        "- not be a yes/no question, and not refer to \"the crop\", \"the close-up\" or the image border.",
        f"Question types: {', '.join(QUESTION_TYPES)}.",
    ]
    if examples:
        lines.append("Example questions, for style only:")
        lines.extend(f"- {e.strip()}" for e in examples)
    lines += [
        "If nothing here is clear enough to ask about, return an empty list.",
        'Reply as JSON: {"questions": [{"type": "...", "question": "..."}]}.',
    ]
    return "\n".join(lines)


def validation_prompt(question: str) -> str:
    """Stage 6: the teacher sees the full image and the crop (in :data:`VALIDATION_IMAGE_ORDER`)."""
    return (
        "The first image is a full photo. The second image is an enlarged crop of one region of it.\n"
        f"Question: {question.strip()}\n"
        "The question is valid only if ALL of these hold:\n"
        "1. Answerable: the crop alone shows enough to answer it.\n"
        "2. Unique: in the full photo the question has exactly one correct answer.\n"
        "3. Consistent: the answer from the crop equals the answer from the full photo "
        "(nothing relevant lies outside the crop).\n"
        "4. Unambiguous: the object it asks about is named so that only one thing in the full photo fits.\n"
        "Check each condition, give a brief reason, then the verdict.\n"
        'Reply as JSON: {"reason": "...", "valid": "Yes" or "No"}.'
    )


def answer_prompt(question: str) -> str:
    """Stage 7: a teacher answers on the crop, reasoning first."""
    return (
        f"{question.strip()}\n"
        "Look carefully at the image and reason step by step. Then give the final answer as a "
        "short phrase only: a number, a word or two, or the exact text.\n"
        'Reply as JSON: {"reasoning": "...", "answer": "..."}.'
    )


def equivalence_prompt(question: str, a: str, b: str) -> str:
    """Stage 8: a text-only judge decides whether two answers to ``question`` agree."""
    return (
        "Two answers were given to the same question about an image.\n"
        f"Question: {question.strip()}\n"
        f"Answer 1: {a.strip()}\n"
        f"Answer 2: {b.strip()}\n"
        "Do they mean the same thing? They are the same if they differ only in wording, spelling or "
        "number format (5, five, 5.0) or name near-identical colours (dark grey, charcoal). They differ "
        "if they give a different count, object, text or clearly different colour.\n"
        'Reply as JSON: {"same": "Yes" or "No"}.'
    )


def overlay_question(question: str) -> str:
    """Stage 9: the question as asked on the full image with the red box drawn on it."""
    return f"{question.strip()}\n{RED_BOX_INSTRUCTION}"


def distractor_prompt(question: str, answer: str, n: int = 3) -> str:
    """Stage 10: ``n`` plausible but wrong options for a multiple-choice version."""
    return (
        f"Question about the region in the red box: {question.strip()}\n"
        f"Correct answer: {answer.strip()}\n"
        f"Write {n} wrong answer options for a multiple-choice version of this question. Each must be "
        "plausible: the same kind of answer as the correct one (a number for a count, a colour for a "
        "colour, text for text) and of similar length, but clearly wrong for the red box. Do not repeat "
        "the correct answer or a synonym of it, and make the options differ from each other.\n"
        'Reply as JSON: {"options": ["...", ...]}.'
    )


def mcq_problem(question: str, options: list[str]) -> str:
    """Stage 10: the multiple-choice problem text (options lettered A, B, C, ...)."""
    lines = [question.strip()]
    lines += [f"{chr(ord('A') + i)}. {str(opt).strip()}" for i, opt in enumerate(options)]
    lines.append(MCQ_INSTRUCTION)
    return "\n".join(lines)


def difficulty_prompt(problem: str) -> str:
    """Stage 11: the student-sized model answers the MCQ (the problem ends with :data:`MCQ_INSTRUCTION`).

    No ``<answer>`` format line: the stage may constrain the reply to ``{"answer": letter}``
    (``difficulty_schema``), and :func:`zwz_ray.replies.read_letter` reads either form.
    """
    return problem.strip()


# --------------------------------------------------------------------------- seed questions (stage 5 examples)

SEED_QUESTIONS_FILE = Path(__file__).parent / "data" / "seed_questions.txt"


def load_seed_questions(path: str | Path | None = None) -> list[str]:
    """The example questions, one per line (blank lines and ``#`` comments skipped, duplicates dropped)."""
    text = Path(path or SEED_QUESTIONS_FILE).read_text(encoding="utf-8")
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seen.setdefault(line, None)
    return list(seen)


def sample_examples(seed_questions: list[str], k: int = 15, rng_or_seed: Any = 0) -> list[str]:
    """``k`` distinct examples (all of them if fewer); the same seed gives the same sample.

    ``rng_or_seed``: an int seed, a ``random.Random`` or a ``numpy.random.Generator``.
    """
    pool, k = list(seed_questions), min(k, len(seed_questions))
    if hasattr(rng_or_seed, "permutation"):  # numpy Generator
        return [pool[i] for i in rng_or_seed.permutation(len(pool))[:k]]
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(rng_or_seed)
    return rng.sample(pool, k)


# --------------------------------------------------------------------------- evaluation judge (zwz_ray.eval) - begin


def judge_equivalence_prompt(question: str, reference: str, candidate: str) -> str:
    """Evaluation: a text-only judge decides whether a model's answer matches the reference answer."""
    return (
        "You grade answers to a question about an image. You cannot see the image.\n"
        f"Question: {question.strip()}\n"
        f"Reference answer: {reference.strip()}\n"
        f"Model answer: {candidate.strip()}\n"
        "Is the model answer equivalent to the reference answer? It is if it differs only in wording, "
        "spelling, letter case or number format (5, five, 5.0), or picks the same option of a multiple-choice "
        "question by letter or by text. It is not if it gives a different count, object, text, colour or "
        "option, or hedges between several answers.\n"
        'Reply as JSON: {"equivalent": true or false}.'
    )


# --------------------------------------------------------------------------- evaluation judge (zwz_ray.eval) - end
