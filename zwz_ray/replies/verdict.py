"""The rule cascade of answer judging: extract, exact, normalised, MCQ letter, MCQ option text.

:func:`judge_answer` is pure. It decides what rules can decide and leaves the rest
``undecided``; an LLM judge (:class:`zwz_ray.judge.LLMJudge`) may then decide those. Without
one, undecided counts as incorrect and stays visible under its own rule name.

Rules (stored per item): ``exact``, ``normalized``, ``mcq_letter``, ``mcq_option_text``,
``llm_judge``, ``no_answer``, ``undecided``, and ``error`` when the model call failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from zwz_ray.replies.choices import LETTERS, choose, gold_letter
from zwz_ray.replies.extract import extract_answer
from zwz_ray.replies.normalize import as_number, normalize_answer, numbers_in

RULES = ("exact", "normalized", "mcq_letter", "mcq_option_text", "llm_judge", "no_answer", "undecided", "error")
_RULE_OF_CHOICE = {"letter": "mcq_letter", "option_text": "mcq_option_text"}


@dataclass
class Verdict:
    extracted: str | None
    correct: bool
    rule: str

    @property
    def verdict(self) -> str:
        return "correct" if self.correct else "incorrect"


def _judge_mcq(extracted: str, gold: str, options: dict[str, str]) -> Verdict:
    letters = "".join(options) if options else LETTERS[: max(4, LETTERS.index(gold) + 1)]
    letter, how = choose(extracted, letters, options)
    if letter is None:
        return Verdict(extracted, False, "undecided")
    return Verdict(extracted, letter == gold, _RULE_OF_CHOICE[how])


def _judge_open(extracted: str, answer: str) -> Verdict:
    norm_pred, norm_gold = normalize_answer(extracted), normalize_answer(answer)
    if norm_pred and norm_pred == norm_gold:
        return Verdict(extracted, True, "normalized")
    gold_value = as_number(answer)
    if gold_value is not None:
        found = numbers_in(extracted)
        if len(found) == 1:
            return Verdict(extracted, abs(found[0] - gold_value) < 1e-9, "normalized")
    return Verdict(extracted, False, "undecided")


def judge_answer(response: str | None, answer: str, *, is_mcq: bool = False, options: dict[str, str] | None = None,
                 policy: str = "default") -> Verdict:
    """Decide one response against the reference answer with rules only (no model).

    ``policy`` names how the answer is extracted (see :data:`zwz_ray.replies.EXTRACTION_POLICIES`).
    """
    extracted = extract_answer(response, policy)
    if not extracted:
        return Verdict(None, False, "no_answer")
    if extracted == str(answer).strip():
        return Verdict(extracted, True, "exact")
    options = options or {}
    gold = gold_letter(answer, options) if is_mcq else None
    if gold is not None:
        return _judge_mcq(extracted, gold, options)
    return _judge_open(extracted, answer)
