"""Stage 10: multiple-choice items from a verified answer and teacher-written distractors.

:class:`Distractors` asks the teacher for wrong options while it looks at the overlay image:
as in the reference, free text (temperature 0.8, about 1024 tokens) with each option in its own
``\\boxed{}``, asked again while fewer than ``n_distractors`` usable options came back (at most
``mcq.max_attempts`` requests; the reference retries without a bound). ``mcq.frame:
boxed_grammar`` constrains only the reply's frame. :class:`MCQAssembly` shuffles the answer among
the cleaned distractors (seeded), letters A-D. :class:`MCQAssembly` lays
the problem out as the paper does: the question (with its red-box instruction), a blank line, one
"A. x" line per option, a blank line, the instruction to answer with the letter (``mcq.instruction``,
``mcq.block_separator``, ``mcq.option_format``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, as_pil, user_message
from zwz_ray.prompts import BLOCK_SEPARATOR, MCQ_INSTRUCTION, OPTION_FORMAT, distractor_prompt, mcq_problem
from zwz_ray.replies import normalize_answer
from zwz_ray.synth.config import MCQConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, Stage, boxed_frame, frame_of, row_seed, sampling, source_key, stable_seed

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def boxed_contents(text: str) -> list[str]:
    """The content of every complete ``\\boxed{...}`` in ``text``, in order (nested braces kept)."""
    out = []
    for m in _BOX_OPEN.finditer(text or ""):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(" ".join(text[m.end() : i - 1].split()))
    return out


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


def build_mcq(question: str, correct: str, distractors: list, seed: int, n: int = 3, *, instruction: str = MCQ_INSTRUCTION,
              separator: str = BLOCK_SEPARATOR, option_format: str = OPTION_FORMAT) -> MCQ:
    """The correct answer shuffled among ``n`` cleaned distractors (seeded), as an MCQ laid out by
    :func:`zwz_ray.prompts.mcq_problem` (the layout keywords are the ``mcq`` config's).

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
        problem=mcq_problem(question, options, instruction, separator, option_format),
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
        self.grammar = frame_of(mcq, boxed_frame(mcq.frame_reasoning_chars, mcq.option_max_chars, mcq.n_distractors))

    def _request(self, row: dict, attempt: int) -> ChatRequest:
        prompt = distractor_prompt(row["question"], row["answer_text"], self.cfg.n_distractors)
        seed = row_seed(self.engine_config.seed + attempt, self.stage_name, row)  # a fresh draw per attempt
        return ChatRequest([user_message(prompt, [self.fit(as_pil(row["image"]))])], sampling(self.cfg, seed), grammar=self.grammar)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        n = self.cfg.n_distractors
        todo = list(rows)
        for row in rows:
            row["distractors"] = []
        for attempt in range(self.cfg.max_attempts):
            if not todo:
                break
            retry = []
            for row, result in zip(todo, self.chat([self._request(row, attempt) for row in todo])):
                if result.error:
                    self.drop(row, "engine_error", result.error)
                    continue
                # candidates of every attempt are pooled; MCQAssembly takes the first n usable ones
                row["distractors"] = row["distractors"] + boxed_contents(result.texts[0] if result.texts else "")
                if len(clean_distractors(row["answer_text"], row["distractors"], n)) < n:
                    retry.append(row)
            todo = retry
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
        seed = stable_seed(source_key(row["source"]), row["object_index"], row["question"], base_seed=self.cfg.seed)
        try:
            mcq = build_mcq(row["overlay_question"], row["answer_text"], row["distractors"], seed, self.cfg.n_distractors,
                            instruction=self.cfg.instruction, separator=self.cfg.block_separator,
                            option_format=self.cfg.option_format)
        except ValueError as exc:
            return self.drop(row, "too_few_distractors", f"{exc}; candidates {row['distractors']}")
        row.update(problem=mcq.problem, answer=mcq.answer_letter, options=mcq.options)
        return row
