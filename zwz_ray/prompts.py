"""Every prompt zwz-ray sends to a model, in one place.

``PROMPT_VERSION`` is recorded in every output row's provenance; bump it whenever a prompt's
wording changes (the golden snapshots in ``tests/golden/prompts`` make such changes visible).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

PROMPT_VERSION = "2026-12-01.2"

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
    "anomaly_detection",
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


def question_prompt(examples: list[str], n: int = 3) -> str:
    """Stage 5: the teacher sees only the crop (never the grounded object's name) and writes up to ``n`` questions.

    The type label is metadata the teacher adds; the reference's mix includes anomaly detection
    and does not forbid yes/no questions.
    """
    lines = [
        "The image is a zoomed-in view of a small part of a bigger photograph.",
        f"Ask up to {n} questions about fine details you can see in it. For every question:",
        "- the answer is short and concrete (a count, a word or short phrase, a colour, a material, or text written "
        "in the image) and can be read from this view alone;",
        "- say exactly which thing you mean (describe it by its look, its position or what is next to it), so that the "
        "question still points at one thing when someone looks at the whole photograph;",
        "- do not mention the zoom, a crop or the edges of the view.",
        f"Kinds of question you may ask: {', '.join(QUESTION_TYPES)}. Label each question with its kind.",
    ]
    if examples:
        lines.append("Some example questions (they show the style, not the content):")
        lines.extend(f"- {e.strip()}" for e in examples)
    lines += [
        "If the view shows nothing worth asking about, give an empty list.",
        'Reply as JSON: {"questions": [{"type": "...", "question": "..."}]}.',
    ]
    return "\n".join(lines)


VERDICT_PREFIX = "VALID:"


def validation_prompt(question: str) -> str:
    """Stage 6: the teacher sees the full image and the crop (in :data:`VALIDATION_IMAGE_ORDER`) and
    reasons step by step; its first ``VALID: Yes`` / ``VALID: No`` line is the verdict."""
    return (
        "You get two images: first a complete photograph, then a zoomed-in view of one part of it.\n"
        f"Question: {question.strip()}\n"
        "Decide whether this question is fit for a dataset. It is fit only when all four points hold:\n"
        "1. Answerable: the zoomed-in view by itself shows enough to answer it.\n"
        "2. One answer: looking at the whole photograph, there is exactly one correct answer.\n"
        "3. Same answer: the answer read from the zoomed-in view is the answer for the whole photograph "
        "(nothing that matters lies outside the view).\n"
        "4. Clear reference: the question names its target so that it fits one thing only in the whole photograph. "
        "It fails if it points only with a pronoun such as \"it\" or \"this object\", if it depends on a viewpoint it "
        "does not state (whose left? seen from where?), or if it uses a vague amount such as \"a lot\" or \"some\".\n"
        "An example of a question that fails: the photograph shows two white buses, one numbered 12 and one "
        "numbered 47, and the view shows only the first. \"What number is on the white bus?\" fails point 2 and "
        "point 4: in the whole photograph it has two answers, because the question does not say which bus.\n"
        "Think it through step by step, one point at a time. Then end with one line that is exactly "
        f"\"{VERDICT_PREFIX} Yes\" or \"{VERDICT_PREFIX} No\"."
    )


def answer_prompt(question: str) -> str:
    """Stage 7: a teacher answers on the crop, reasoning freely, the final answer in ``\\boxed{}``."""
    return (
        f"{question.strip()}\n"
        "Study the image closely and work out the answer step by step. Then write the final answer once, "
        "inside \\boxed{}: a number for a count, a word or short phrase for a colour, a material or an object, "
        "and for written text the whole text exactly as it appears."
    )


def consensus_prompt(question: str, answers: list[str]) -> str:
    """Stage 8 (holistic judge): a text model reads every teacher answer at once and names the
    majority answer and how many answers agree with it."""
    listed = "\n".join(f"{i}. {a.strip() if a and a.strip() else '(no answer)'}" for i, a in enumerate(answers, 1))
    return (
        f"{len(answers)} answers were given independently to the same question about an image.\n"
        f"Question: {question.strip()}\n"
        f"Answers:\n{listed}\n"
        "Group the answers that mean the same thing: the same count however it is written (5, five, 5.0), the same "
        "text up to letter case and spacing, the same object or material in other words, or colours that are "
        "practically the same shade. Different counts, different text, different objects and clearly different "
        "colours are different answers; \"(no answer)\" agrees with nothing.\n"
        "Find the largest group. Give its answer as one short normalised string, written as the answers in that "
        "group write it, and the number of answers in that group.\n"
        'Think first, briefly, then reply as JSON: {"reasoning": "...", "answer": "...", "count": number}.'
    )


def equivalence_prompt(question: str, a: str, b: str) -> str:
    """Stage 8 (pairwise judge, ``consensus.mode: pairwise``): do two answers to ``question`` agree?"""
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
    """Stage 10: ``n`` plausible but wrong options, each in its own ``\\boxed{}`` after optional reasoning."""
    return (
        f"Question about what is inside the red box: {question.strip()}\n"
        f"Correct answer: {answer.strip()}\n"
        f"Invent {n} wrong answers for a multiple-choice version of this question. Each wrong answer should look "
        "believable: the same kind of thing as the correct answer (a count for a count, a colour for a colour, text "
        "for text) and about as long, yet clearly wrong for what the red box shows. None may repeat the correct answer "
        "or say the same thing in other words, and no two may be the same.\n"
        f"You may think first. Then write the {n} wrong answers, each inside its own \\boxed{{}}, one per line."
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


DIFFICULTY_FORMAT = "Reason step by step, then put the letter of your final choice inside \\boxed{}."


def difficulty_prompt(problem: str) -> str:
    """Stage 11: the student-sized model reasons about the MCQ, its choice in ``\\boxed{}``.

    The problem already ends with :data:`MCQ_INSTRUCTION`; the stage reads the reply with the
    shared rule cascade (:func:`zwz_ray.replies.judge_answer`), so ``<answer>B</answer>`` works too.
    """
    return f"{problem.strip()}\n\n{DIFFICULTY_FORMAT}"


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
