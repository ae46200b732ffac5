"""Reading a model's answer for evaluation: numbers and multiple-choice options.

Extraction and normalisation are shared with data synthesis and live in :mod:`zwz_ray.parsing`,
so consensus and the judge agree on what counts as the same answer ("five" == "5"):

* :func:`extract_answer` is :func:`zwz_ray.parsing.extract_answer` returning only the string
  (``None`` when there is none): ``<answer>...</answer>``, else ``\\boxed{}``, else an
  ``Answer:`` / ``the answer is`` line, else the last non-empty line;
* :func:`normalize_answer` is :func:`zwz_ray.parsing.normalize_answer`.

Evaluation-only here: numeric comparison (:func:`numbers_in`, :func:`as_number`) and
multiple choice (:func:`parse_options`, :func:`gold_letter`, :func:`detect_mcq`).
"""

from __future__ import annotations

import re

from zwz_ray.parsing import NUMBER_WORDS, normalize_answer
from zwz_ray.parsing import extract_answer as _extract_answer

__all__ = [
    "LETTERS",
    "NUMBER_WORDS",
    "as_number",
    "detect_mcq",
    "extract_answer",
    "gold_letter",
    "normalize_answer",
    "numbers_in",
    "options_from_list",
    "parse_options",
]

_WRAPPERS = " \t\r\n\"'`*_"
_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?$")


def extract_answer(response: str | None) -> str | None:
    """The final answer in a model response, or None when there is none."""
    answer, _ = _extract_answer(response)
    return answer or None


# --------------------------------------------------------------------------- numbers


def numbers_in(text: str | None) -> list[float]:
    """Every number in the normalised text, in order."""
    return [float(t) for t in normalize_answer(text).split() if _NUMBER.match(t)]


def as_number(text: str | None) -> float | None:
    """The value when the whole normalised text is one number, else None."""
    norm = normalize_answer(text)
    return float(norm) if _NUMBER.match(norm) else None


# --------------------------------------------------------------------------- multiple choice

_OPT_LINE = re.compile(r"^\s*[\(\[]?([A-H])[\)\]\.:](?:\s+|$)(.*)$")
_OPT_INLINE = re.compile(r"\(([A-H])\)\s*")
_OPT_INLINE_DOT = re.compile(r"(?:(?<=\s)|^)([A-H])[.)]\s+")
LETTERS = "ABCDEFGH"


def _consecutive(letters: list[str]) -> bool:
    return len(letters) >= 2 and "".join(letters) == LETTERS[: len(letters)]


def parse_options(question: str | None) -> dict[str, str]:
    """Options in a question: ``(A) red`` / ``A. red`` lines, or inline ``(A) red (B) blue`` / ``A. red B. blue``.

    Returns ``{letter: text}`` when at least two consecutive letters from A are found, else ``{}``.
    """
    if not question:
        return {}
    found: dict[str, str] = {}
    for line in question.splitlines():
        m = _OPT_LINE.match(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = m.group(2).strip()
    if _consecutive(list(found)):
        return found
    for pattern in (_OPT_INLINE, _OPT_INLINE_DOT):
        parts = pattern.split(question)
        inline = {parts[i]: parts[i + 1].strip().rstrip(",;").strip() for i in range(1, len(parts) - 1, 2)}
        if _consecutive(list(inline)):
            return inline
    return {}


def options_from_list(options: list | tuple | None) -> dict[str, str]:
    """A list of option texts -> ``{"A": ..., "B": ...}`` (leading "A." / "(A)" labels stripped)."""
    if options is None or len(options) == 0:
        return {}
    out = {}
    for letter, text in zip(LETTERS, options):
        m = _OPT_LINE.match(str(text))
        out[letter] = m.group(2).strip() if m and m.group(1) == letter else str(text).strip()
    return out


def gold_letter(answer: str, options: dict[str, str]) -> str | None:
    """The letter a reference answer names: "B", "(B)", "b.", or the text of one option."""
    text = (answer or "").strip().strip(_WRAPPERS)
    m = re.fullmatch(r"[\(\[]?([A-Ha-h])[\)\]\.]?", text)
    if m and (not options or m.group(1).upper() in options):
        return m.group(1).upper()
    m = _OPT_LINE.match(text)
    if m and m.group(1) in options:
        return m.group(1)
    norm = normalize_answer(text)
    hits = [k for k, v in options.items() if norm and normalize_answer(v) == norm]
    return hits[0] if len(hits) == 1 else None


def detect_mcq(question: str, answer: str, options: list | None = None) -> tuple[bool, dict[str, str]]:
    """(is multiple choice, options): from an options list, options in the question, or a single-letter answer."""
    opts = options_from_list(options) or parse_options(question)
    if opts:
        return gold_letter(answer, opts) is not None, opts
    single = re.fullmatch(r"[\(\[]?([A-F])[\)\]\.]?", (answer or "").strip())
    return single is not None, {}
