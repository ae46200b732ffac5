"""Reading model replies: answers, normalisation, option letters, and the rule cascade of judging.

Shared by data synthesis (consensus, difficulty filter), evaluation and the GRPO reward, so they
agree on what an answer is and when two answers match ("five" == "5"). Pure text: no model, no
torch. Every reader returns None (or an empty value) on bad model output instead of raising.

* :mod:`.extract`: :func:`extract_answer` by a named policy (``EXTRACTION_POLICIES``);
* :mod:`.normalize`: :func:`normalize_answer`, number words, :func:`numbers_in`, :func:`as_number`;
* :mod:`.choices`: options in a question, gold letters, MCQ detection and the one letter reader
  (:func:`choose` on an extracted answer, :func:`read_letter` on a whole reply);
* :mod:`.verdict`: :func:`judge_answer` -> :class:`Verdict`, with its ``RULES``.

JSON in replies is read by :func:`zwz_ray.engines.parse_json`; the LLM judge is :mod:`zwz_ray.judge`.
"""

from __future__ import annotations

from zwz_ray.replies.choices import (
    LETTERS,
    choose,
    detect_mcq,
    gold_letter,
    letters_in,
    match_option_text,
    options_from_list,
    parse_options,
    read_letter,
)
from zwz_ray.replies.extract import EXTRACTION_POLICIES, GRPO_MAX_CHARS, extract_answer, extract_boxed, locate_answer
from zwz_ray.replies.normalize import NUMBER_WORDS, as_number, normalize_answer, numbers_in
from zwz_ray.replies.verdict import RULES, Verdict, judge_answer

__all__ = [
    "EXTRACTION_POLICIES",
    "GRPO_MAX_CHARS",
    "LETTERS",
    "NUMBER_WORDS",
    "RULES",
    "Verdict",
    "as_number",
    "choose",
    "detect_mcq",
    "extract_answer",
    "extract_boxed",
    "gold_letter",
    "judge_answer",
    "letters_in",
    "locate_answer",
    "match_option_text",
    "normalize_answer",
    "numbers_in",
    "options_from_list",
    "parse_options",
    "read_letter",
]
