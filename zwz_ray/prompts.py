"""Every prompt zwz-ray sends to a model, in one place.

``PROMPT_VERSION`` is recorded in every output row's provenance; bump it whenever a prompt's
wording changes (the golden snapshots in ``tests/golden/prompts`` make such changes visible).
"""

from __future__ import annotations

PROMPT_VERSION = "2026-11-24.1"

# --------------------------------------------------------------------------- student (train, eval, difficulty filter)

ANSWER_FORMAT = "Think briefly if needed, then give the final answer inside <answer></answer>."

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices."


def student_prompt(question: str) -> str:
    """What the student sees next to the image, at training and at evaluation time."""
    return f"{question.strip()}\n{ANSWER_FORMAT}"


def student_target(answer: str) -> str:
    """The SFT target for a distilled row: the answer in the tags the reward and the judge read."""
    return f"<answer>{answer.strip()}</answer>"
