"""Every prompt zwz-ray sends to a model, in one place.

``PROMPT_VERSION`` is recorded in every output row's provenance; bump it whenever a prompt's
wording changes (the golden snapshots in ``tests/golden/prompts`` make such changes visible).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

PROMPT_VERSION = "2026-12-01.1"

# --------------------------------------------------------------------------- student (train, eval, difficulty filter)

ANSWER_FORMAT = "Think briefly if needed, then give the final answer inside <answer></answer>."

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices."


def student_prompt(question: str) -> str:
    """What the student sees next to the image, at training and at evaluation time."""
    return f"{question.strip()}\n{ANSWER_FORMAT}"


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

# Stage 9's instruction, in our words: the released training set (inclusionAI/ZwZ-RL-VQA) appends its own
# one-sentence instruction at this place and in this layout; set ``overlay.instruction`` to that sentence to
# reproduce its rows exactly.
RED_BOX_INSTRUCTION = "Answer using only what lies inside the red bounding box drawn on the image."
# The paper's blocks are separated by a blank line (``overlay.separator``, ``mcq.block_separator``).
BLOCK_SEPARATOR = "\n\n"
OPTION_FORMAT = "{letter}. {text}"


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


def overlay_question(question: str, instruction: str = RED_BOX_INSTRUCTION, separator: str = BLOCK_SEPARATOR) -> str:
    """Stage 9: the question as asked on the full image with the red box drawn on it: the question,
    a blank line (``separator``), then the red-box instruction."""
    return f"{question.strip()}{separator}{instruction.strip()}"


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


def mcq_problem(question: str, options: list[str], instruction: str = MCQ_INSTRUCTION, separator: str = BLOCK_SEPARATOR,
                option_format: str = OPTION_FORMAT) -> str:
    """Stage 10: the multiple-choice problem: the question, the options (one ``option_format`` line
    each, lettered A, B, C, ...) and the instruction, as three blocks joined by ``separator``.

    Raises ``ValueError`` when ``option_format`` lacks ``{letter}`` or ``{text}`` or names another field.
    """
    if "{letter}" not in option_format or "{text}" not in option_format:
        raise ValueError(f"option_format must contain {{letter}} and {{text}}, got {option_format!r}")
    try:
        lines = [option_format.format(letter=chr(ord("A") + i), text=str(opt).strip()) for i, opt in enumerate(options)]
    except (KeyError, IndexError) as exc:
        raise ValueError(f"option_format {option_format!r} names an unknown field {exc}") from None
    blocks = [question.strip(), "\n".join(lines), instruction.strip()]
    return separator.join(b for b in blocks if b)


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


def judge_yes_no_prompt(question: str, reference: str, candidate: str) -> str:
    """Evaluation, ``reference`` protocol: the judge answers a plain Yes or No (read by
    :func:`zwz_ray.judge.parse_equivalence`), as the published evaluation asks it."""
    return (
        "Decide whether a response to a question about an image gives the same answer as the reference answer.\n"
        f"Question: {question.strip()}\n"
        f"Reference answer: {reference.strip()}\n"
        f"Response: {candidate.strip()}\n"
        "If the response means the same as the reference answer, output Yes; otherwise output No. "
        "Output only Yes or No."
    )


# --------------------------------------------------------------------------- evaluation judge (zwz_ray.eval) - end

# --------------------------------------------------------------------------- evaluation protocols (zwz_ray.eval)


def reference_system_prompt() -> str:
    """Evaluation, ``reference`` protocol: the system turn. It asks for the reasoning first and the final
    answer inside ``<answer></answer>``; the user turn is then the benchmark's question as it is."""
    return (
        "You are a helpful assistant. First think the problem through step by step, then give the user "
        "the final answer. Put the reasoning first and the final answer inside <answer></answer> tags, "
        "like this: reasoning here <answer>final answer here</answer>"
    )


# --------------------------------------------------------------------------- zoom agent baseline (zwz_ray.eval.agent) - begin

ZOOM_TOOL_NAME = "image_zoom_in_tool"


def zoom_agent_prompt(coords: str = "absolute") -> str:
    """Evaluation, agent baseline: the system prompt describing the zoom tool (Hermes-style tool block).

    ``coords`` is ``"absolute"`` (pixels of the image as the model sees it, Qwen2.5-VL) or
    ``"relative1000"`` (0..1000, Qwen3-VL). The question follows as a user turn (:func:`student_prompt`).
    """
    if coords not in BOX_COORDS:
        raise ValueError(f"coords must be one of {BOX_COORDS}, got {coords!r}")
    scale = ("in pixel coordinates of the first image" if coords == "absolute"
             else "on a 0-1000 scale relative to the width and height of the first image")
    tool = {"type": "function", "function": {
        "name": ZOOM_TOOL_NAME,
        "description": "Zoom in on a region of the first image: returns that region enlarged, as a new image.",
        "parameters": {"type": "object", "required": ["bbox_2d"], "properties": {"bbox_2d": {
            "type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
            "description": f"[x1, y1, x2, y2] {scale}: (x1, y1) is the top-left corner and (x2, y2) the bottom-right corner."}}}}}
    return "\n".join([
        "You answer questions about an image. Small details may be hard to see at first: zoom in on the region "
        "that matters before you answer.",
        "# Tools",
        "You may call the function below. Its signature, as JSON, is inside <tools></tools>:",
        "<tools>",
        json.dumps(tool),
        "</tools>",
        "To call it, reply with a JSON object holding the function name and its arguments inside "
        "<tool_call></tool_call> tags, for example:",
        "<tool_call>",
        '{"name": "' + ZOOM_TOOL_NAME + '", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}',
        "</tool_call>",
        f"Every box is {scale}; the zoomed region comes back in the next turn.",
        "When you can answer, reply without a tool call and give the final answer inside <answer></answer>.",
    ])


def zoom_result_prompt(turns_left: int, error: str | None = None) -> str:
    """Evaluation, agent baseline: the text that comes back with a zoomed region (or a failed call)."""
    head = (f"The zoom-in call failed: {error.strip()}. Call {ZOOM_TOOL_NAME} with arguments "
            'like {"bbox_2d": [x1, y1, x2, y2]} (JSON), or answer.') if error else "Here is the zoomed-in region."
    tail = ("This was your last zoom-in: answer now, inside <answer></answer>." if turns_left <= 1
            else f"You may zoom in up to {turns_left - 1} more time(s) or answer inside <answer></answer>.")
    return f"{head}\n{tail}"


# --------------------------------------------------------------------------- zoom agent baseline (zwz_ray.eval.agent) - end
