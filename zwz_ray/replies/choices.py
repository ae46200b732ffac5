"""Multiple choice: the options of a question, the letter a reference names, the letter a reply picks.

:func:`choose` is the one letter reader: the evaluation judge calls it on the extracted answer
(and names its rule after how the letter was found); the difficulty filter calls
:func:`read_letter` on the whole reply, which also reads a JSON ``{"answer": "B"}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from zwz_ray.engines.structured import parse_json
from zwz_ray.replies.extract import locate_answer
from zwz_ray.replies.normalize import normalize_answer

LETTERS = "ABCDEFGH"
_WRAPPERS = " \t\r\n\"'`*_"

# --------------------------------------------------------------------------- options in a question

_OPT_LINE = re.compile(r"^\s*[\(\[]?([A-H])[\)\]\.:](?:\s+|$)(.*)$")
# Inline options are read line by line, so the last option of a line ends at the line's end and
# never swallows an instruction written on the next line.
_OPT_INLINE = re.compile(r"\(([A-H])\)\s*")
_OPT_INLINE_MARK = re.compile(r"(?:(?<=\s)|^)([A-H])[.):]\s+")


def _consecutive(letters: Sequence[str]) -> bool:
    return len(letters) >= 2 and "".join(letters) == LETTERS[: len(letters)]


def _inline(lines: list[str], pattern: re.Pattern) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        parts = pattern.split(line)
        for i in range(1, len(parts) - 1, 2):
            found.setdefault(parts[i], parts[i + 1].strip().rstrip(",;").strip())
    return found


def parse_options(question: str | None) -> dict[str, str]:
    """Options in a question: ``(A) red`` / ``A) red`` / ``A. red`` / ``A: red``, one per line or inline.

    Returns ``{letter: text}`` when at least two consecutive letters from A are found, else ``{}``.
    """
    if not question:
        return {}
    lines = question.splitlines()
    found: dict[str, str] = {}
    for line in lines:
        m = _OPT_LINE.match(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = m.group(2).strip()
    if _consecutive(list(found)):
        return found
    for pattern in (_OPT_INLINE, _OPT_INLINE_MARK):
        inline = _inline(lines, pattern)
        if _consecutive(list(inline)):
            return inline
    return {}


def options_from_list(options: Sequence | None) -> dict[str, str]:
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


def detect_mcq(question: str, answer: str, options: Sequence | None = None) -> tuple[bool, dict[str, str]]:
    """(is multiple choice, options): from an options list, options in the question, or a single-letter answer."""
    opts = options_from_list(options) or parse_options(question)
    if opts:
        return gold_letter(answer, opts) is not None, opts
    single = re.fullmatch(r"[\(\[]?([A-F])[\)\]\.]?", (answer or "").strip())
    return single is not None, {}


# --------------------------------------------------------------------------- the letter a reply picks

_BARE = re.compile(r"^[\(\[]?([A-Ha-h])[\)\]]?[.:]?$")
_LEADING = re.compile(r"^[\(\[]?([A-Ha-h])(?:[\)\]][.:]?|[.:])(?:\s|$)")
_PHRASE = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is\s*|would\s+be\s*|should\s+be\s*|:\s*)?[\(\[]?([A-Ha-h])\b([\)\]]?)(?=(.?))",
    re.IGNORECASE,
)
_PAREN = re.compile(r"[\(\[]([A-H])[\)\]]")
_STANDALONE = re.compile(r"(?<![\w'])([A-H])(?![\w'])")
_NEGATION = re.compile(r"\b(?:not|isn't|is\s+not|never|except|no)\s+(?:option\s+|choice\s+)?[\(\[]?$", re.IGNORECASE)
_VERBS_AFTER_LETTER = {"is", "was", "would", "seems", "appears", "looks", "matches", "fits", "because", "since", "or", "and", "nor", "vs"}
_ANSWER_KEY = {"type": "object", "required": ["answer"]}


def _negated(text: str, start: int) -> bool:
    return _NEGATION.search(text[max(0, start - 16) : start]) is not None


def _phrase_letters(text: str) -> set[str]:
    out = set()
    for m in _PHRASE.finditer(text):
        letter, closing, nxt = m.group(1), m.group(2), m.group(3)
        # a lowercase letter counts only when nothing word-like follows ("answer is b." yes, "answer is a cat" no)
        if letter.islower() and not closing and nxt and (nxt.isalnum() or nxt == " "):
            continue
        if not _negated(text, m.start(1)):
            out.add(letter.upper())
    return out


def _loose_letters(text: str) -> set[str]:
    out = {m.group(1) for m in _PAREN.finditer(text) if not _negated(text, m.start())}
    for m in _STANDALONE.finditer(text):
        following = text[m.end() :].split(maxsplit=1)
        word = following[0].strip(".,;:!?") if following else ""
        article = m.group(1) == "A" and word[:1].islower() and word.lower() not in _VERBS_AFTER_LETTER
        if not article and not _negated(text, m.start()):
            out.add(m.group(1))
    return out


def letters_in(text: str, letters: str) -> set[str]:
    """Letters (within ``letters``) that an extracted answer picks; more than one means ambiguous."""
    text = text.strip()
    for pattern in (_BARE, _LEADING):
        m = pattern.match(text)
        if m and m.group(1).upper() in letters:
            return {m.group(1).upper()}
    found = _phrase_letters(text) or _loose_letters(text)
    return {x for x in found if x in letters}


def match_option_text(text: str, options: Mapping[str, str]) -> str | None:
    """The one option whose text the answer gives (equal after normalising, else contained as words)."""
    norm = normalize_answer(text)
    if not norm:
        return None
    texts = {k: normalize_answer(v) for k, v in options.items()}
    equal = [k for k, v in texts.items() if v and v == norm]
    if len(equal) == 1:
        return equal[0]
    inside = [k for k, v in texts.items() if v and re.search(rf"(?<!\w){re.escape(v)}(?!\w)", norm)]
    # drop options contained in another contained option ("red" inside "dark red")
    inside = [k for k in inside if not any(k != o and texts[k] in texts[o] for o in inside)]
    return inside[0] if len(inside) == 1 else None


def _as_options(options: Mapping[str, str] | Sequence | None, letters: str) -> dict[str, str]:
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return {str(k): str(v) for k, v in options.items()}
    return {letter: str(text) for letter, text in zip(letters, options)}


def choose(answer: str, letters: str, options: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """The letter an extracted answer picks and how: ``letter``, ``option_text``, ``ambiguous`` or ``none``.

    A letter ("B", "(B)", "B. red", "the answer is B") wins; several letters are ambiguous; with no
    letter, the text of exactly one option ("blue" -> its letter) decides.
    """
    picked = letters_in(answer, letters)
    if len(picked) == 1:
        return picked.pop(), "letter"
    if len(picked) > 1:
        return None, "ambiguous"
    chosen = match_option_text(answer, options) if options else None
    return (chosen, "option_text") if chosen is not None else (None, "none")


def read_letter(text: Any, letters: str = "ABCD", options: Mapping[str, str] | Sequence | None = None) -> str | None:
    """The option letter a multiple-choice reply picks, or None (no letter, or several).

    Reads JSON ``{"answer": "B"}``, ``<answer>B</answer>``, ``\\boxed{B}``, "B", "(B)", "B. red",
    "Option B" and, when ``options`` are given (a list in letter order, or ``{letter: text}``),
    the option's text itself ("red" -> its letter).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    obj, _ = parse_json(text, _ANSWER_KEY)
    answer = str(obj["answer"]) if obj is not None else locate_answer(text)[0]
    answer = answer.strip()
    if len(answer) == 1 and answer.upper() in letters:
        return answer.upper()
    return choose(answer, letters, _as_options(options, letters))[0]
