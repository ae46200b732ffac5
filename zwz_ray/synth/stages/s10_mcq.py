"""Stage 10: multiple-choice items from a verified answer and teacher-written distractors.

:class:`Distractors` asks the teacher for wrong options while it looks at the overlay image;
:class:`MCQAssembly` shuffles the answer among the cleaned distractors (seeded), letters A-D.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, as_pil, user_message
from zwz_ray.prompts import distractor_prompt, mcq_problem
from zwz_ray.replies import normalize_answer
from zwz_ray.synth.config import MCQConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, Stage, bounded_array, bounded_string, json_object, sampling, stable_seed
from zwz_ray.synth.stages.s07_answers import ANSWER_MAX_CHARS  # an option is an answer: the same bound

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def distractor_schema(n: int = 3) -> dict:
    """Exactly ``n`` wrong options."""
    return json_object(options=bounded_array(bounded_string(ANSWER_MAX_CHARS), n, n))


DISTRACTOR_SCHEMA = distractor_schema()


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


# --------------------------------------------------------------------------- the stages


class Distractors(ModelStage):
    """Stage 10, first half: the teacher writes wrong options while looking at the overlay image."""

    name = "distractors"
    reads = ("image", "question", "answer_text")
    writes = ("distractors",)
    level_in = level_out = QUESTION

    def __init__(self, engine_config: EngineConfig, mcq: MCQConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = mcq
        self.schema = distractor_schema(mcq.n_distractors)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        requests = [
            ChatRequest([user_message(distractor_prompt(row["question"], row["answer_text"], self.cfg.n_distractors),
                                      [self.fit(as_pil(row["image"]))])],
                        sampling(self.cfg, self.seed(row)), self.schema)
            for row in rows
        ]
        for row, result in zip(rows, self.chat(requests)):
            value = self.reply(row, result, self.schema)
            if value is not None:
                row["distractors"] = [str(v) for v in value["options"]]
        return [[row] for row in rows]


class MCQAssembly(Stage):
    """Stage 10, second half: the answer shuffled among the cleaned distractors (seeded), letters A-D."""

    name = "mcq"
    reads = ("source", "object_index", "question", "overlay_question", "answer_text", "distractors")
    writes = ("problem", "answer", "options")
    level_in = level_out = QUESTION

    def __init__(self, mcq: MCQConfig, **kw):
        super().__init__(**kw)
        self.cfg = mcq

    def process(self, rows: list[dict]) -> list[list[dict]]:
        return [[self._assemble(row)] for row in rows]

    def _assemble(self, row: dict) -> dict:
        seed = stable_seed(row["source"], row["object_index"], row["question"], base_seed=self.cfg.seed)
        try:
            mcq = build_mcq(row["overlay_question"], row["answer_text"], row["distractors"], seed, self.cfg.n_distractors)
        except ValueError as exc:
            return self.drop(row, "too_few_distractors", f"{exc}; candidates {row['distractors']}")
        row.update(problem=mcq.problem, answer=mcq.answer_letter, options=mcq.options)
        return row
