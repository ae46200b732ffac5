"""Stage 10: multiple-choice items from a verified answer and teacher-written distractors."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from zwz_ray.parsing import normalize_answer
from zwz_ray.prompts import mcq_problem

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def stable_seed(*parts: object, base_seed: int = 0) -> int:
    """A 63-bit seed from ``parts`` that is the same in every process (blake2b, not ``hash()``)."""
    text = "\x1f".join([str(base_seed), *map(str, parts)])
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def letter_of(index: int) -> str:
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"option index out of range: {index}")
    return LETTERS[index]


def index_of(letter: str) -> int:
    i = LETTERS.find(str(letter).strip().upper())
    if len(str(letter).strip()) != 1 or i < 0:
        raise ValueError(f"not an option letter: {letter!r}")
    return i


def clean_distractors(correct: str, candidates: list, n: int = 3) -> list[str]:
    """Up to ``n`` usable distractors, in order: no empties, no duplicates, none equal to ``correct``.

    Equality is judged after :func:`normalize_answer`.
    """
    seen = {normalize_answer(correct)}
    out: list[str] = []
    for cand in candidates or []:
        if not isinstance(cand, (str, int, float)) or isinstance(cand, bool):
            continue
        text = " ".join(str(cand).split())
        key = normalize_answer(text)
        if key and key not in seen:
            seen.add(key)
            out.append(text)
        if len(out) == n:
            break
    return out


@dataclass
class MCQ:
    problem: str
    answer_letter: str
    options: list[str]
    correct_index: int


def build_mcq(question: str, correct: str, distractors: list, seed: int, n: int = 3) -> MCQ:
    """The correct answer shuffled among ``n`` cleaned distractors (seeded), as an MCQ.

    Raises ``ValueError`` when fewer than ``n`` usable distractors remain (the stage records
    the drop reason ``too_few_distractors``).
    """
    wrong = clean_distractors(correct, distractors, n)
    if len(wrong) < n:
        raise ValueError(f"too_few_distractors: {len(wrong)} usable of {n} needed")
    options = [" ".join(str(correct).split()), *wrong]
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    options = [options[i] for i in order]
    correct_index = order.index(0)
    return MCQ(
        problem=mcq_problem(question, options),
        answer_letter=letter_of(correct_index),
        options=options,
        correct_index=correct_index,
    )
