"""The judging cascade: extract, exact, normalised, MCQ letter, MCQ option text, then an LLM judge.

:func:`judge_answer` is pure. It decides what rules can decide and leaves the rest
``undecided``; :class:`LLMJudge` then asks a text model (structured output
``{"equivalent": bool}``) about the undecided rows only. Without a judge model, undecided
counts as incorrect and stays visible under its own rule name.

Rules (stored per item): ``exact``, ``normalized``, ``mcq_letter``, ``mcq_option_text``,
``llm_judge``, ``no_answer``, ``undecided``, and ``error`` when the model call failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zwz_ray.eval.answers import (
    LETTERS,
    as_number,
    extract_answer,
    gold_letter,
    normalize_answer,
    numbers_in,
)

RULES = ("exact", "normalized", "mcq_letter", "mcq_option_text", "llm_judge", "no_answer", "undecided", "error")


@dataclass
class Verdict:
    extracted: str | None
    correct: bool
    rule: str

    @property
    def verdict(self) -> str:
        return "correct" if self.correct else "incorrect"


# --------------------------------------------------------------------------- MCQ letters

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


def find_letters(text: str, letters: str) -> set[str]:
    """Letters (within ``letters``) that an extracted answer picks; more than one means ambiguous."""
    text = text.strip()
    for pattern in (_BARE, _LEADING):
        m = pattern.match(text)
        if m and m.group(1).upper() in letters:
            return {m.group(1).upper()}
    found = _phrase_letters(text) or _loose_letters(text)
    return {x for x in found if x in letters}


def match_option_text(text: str, options: dict[str, str]) -> str | None:
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


# --------------------------------------------------------------------------- the cascade


def _judge_mcq(extracted: str, gold: str, options: dict[str, str]) -> Verdict:
    letters = "".join(options) if options else LETTERS[: max(4, LETTERS.index(gold) + 1)]
    picked = find_letters(extracted, letters)
    if len(picked) == 1:
        return Verdict(extracted, picked == {gold}, "mcq_letter")
    if len(picked) > 1:
        return Verdict(extracted, False, "undecided")
    chosen = match_option_text(extracted, options) if options else None
    if chosen is not None:
        return Verdict(extracted, chosen == gold, "mcq_option_text")
    return Verdict(extracted, False, "undecided")


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


def judge_answer(response: str | None, answer: str, *, is_mcq: bool = False, options: dict[str, str] | None = None) -> Verdict:
    """Decide one response against the reference answer with rules only (no model)."""
    extracted = extract_answer(response)
    if not extracted:
        return Verdict(None, False, "no_answer")
    if extracted == str(answer).strip():
        return Verdict(extracted, True, "exact")
    options = options or {}
    gold = gold_letter(answer, options) if is_mcq else None
    if gold is not None:
        return _judge_mcq(extracted, gold, options)
    return _judge_open(extracted, answer)


# --------------------------------------------------------------------------- LLM judge stage

EQUIVALENCE_SCHEMA = {
    "type": "object",
    "properties": {"equivalent": {"type": "boolean"}},
    "required": ["equivalent"],
    "additionalProperties": False,
}


def parse_equivalence(text: str) -> bool | None:
    """The judge's decision from its output: JSON ``{"equivalent": ...}``, else a yes/no word."""
    from zwz_ray.engines import parse_json

    data, _ = parse_json(text, EQUIVALENCE_SCHEMA)
    if isinstance(data, dict) and isinstance(data.get("equivalent"), bool):
        return data["equivalent"]
    words = re.findall(r"[a-z]+", (text or "").lower())
    yes, no = {"yes", "true"} & set(words), {"no", "false", "not"} & set(words)
    if yes and not no:
        return True
    if no and not yes:
        return False
    return None


class LLMJudge:
    """Asks a text model whether an undecided answer means the same as the reference."""

    def __init__(self, engine, max_tokens: int = 64):
        self.engine = engine
        self.max_tokens = max_tokens

    def requests(self, rows: list[dict]) -> list:
        from zwz_ray.engines import ChatRequest, SamplingParams, user_message
        from zwz_ray.prompts import judge_equivalence_prompt

        sampling = SamplingParams(n=1, temperature=0.0, max_tokens=self.max_tokens, seed=0)
        return [
            ChatRequest(
                messages=[user_message(judge_equivalence_prompt(r["question"], r["answer"], r["extracted"] or ""))],
                sampling=sampling,
                json_schema=EQUIVALENCE_SCHEMA,
                request_id=f"judge:{r.get('id', i)}:{r.get('view', '')}",
            )
            for i, r in enumerate(rows)
        ]

    def decide(self, rows: list[dict]) -> list[tuple[bool | None, str]]:
        """(equivalent or None when the judge gave no usable decision, the judge's raw text) per row."""
        results = self.engine.chat(self.requests(rows))
        out = []
        for res in results:
            text = res.texts[0] if res.ok and res.texts else ""
            out.append((parse_equivalence(text) if res.ok else None, text if res.ok else f"error: {res.error}"))
        return out
