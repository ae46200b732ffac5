"""Finding the final answer in a free-text reply, by a named policy.

The paper's consumers read answers differently, so :func:`extract_answer` takes the policy by name:

* ``default``: the last non-empty ``<answer>`` block, else the last ``\\boxed{}``, else the last
  "Answer: ..." line, else the last non-empty line (:func:`locate_answer` also says which);
* ``eval``: the reference evaluation protocol: the text inside the first ``<answer>...</answer>``,
  else everything from the first "Answer:" on, else the last 3 lines;
* ``grpo``: the GRPO reward: the first ``<answer>...</answer>``, else the whole response; an empty
  answer, or one of ``GRPO_MAX_CHARS`` characters or more, is no answer;
* ``boxed``: synthesis: the content of the last ``\\boxed{}``.

Every policy collapses whitespace and strips surrounding quotes and bold markers, never raises on
bad input and returns None when there is no answer.
"""

from __future__ import annotations

import re
from typing import Any

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|textit)\s*\{(.*)\}$", re.S)
_OPEN_TAG = re.compile(r"<\s*answer\s*>", re.I)
_CLOSE_TAG = re.compile(r"<\s*/\s*answer\s*>", re.I)
_ANY_TAG = re.compile(r"<\s*/?\s*answer\s*>", re.I)
_PARTIAL_TAG = re.compile(r"<\s*/?\s*(?:a|an|ans|answ|answe|answer)?\s*$", re.I)  # cut off by max_tokens
_ANSWER_LINE = re.compile(r"^.*?\banswer\b[ \t*_]{0,6}(?:[:：]|is\b[ \t*_]{0,6}:?)(?P<a>.*)$", re.I | re.M)
_EDGE = " \t\r\n\"`*_"


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of each ``{`` -> position of the ``}`` that closes it (one pass)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
    return pairs


def _unwrap(content: str) -> str:
    content = content.strip()
    while (m := _WRAPPER.match(content)) is not None:
        content = m.group(1).strip()
    return content


def extract_boxed(text: Any) -> str | None:
    r"""Content of the last complete ``\boxed{...}`` (nested braces kept; ``\text{}`` unwrapped)."""
    if not isinstance(text, str):
        return None
    if "\\" not in text:
        return None
    pairs = _brace_pairs(text)
    for m in reversed(list(_BOXED.finditer(text))):
        close = pairs.get(m.end() - 1)
        if close is not None:
            return _unwrap(text[m.end() : close])
    return None


def _from_tags(text: str) -> str | None:
    """Content of the last non-empty ``<answer>`` block; an unclosed last tag runs to the end."""
    opens = list(_OPEN_TAG.finditer(text))
    for i in reversed(range(len(opens))):
        start = opens[i].end()
        end = opens[i + 1].start() if i + 1 < len(opens) else len(text)
        close = _CLOSE_TAG.search(text, start, end)
        if close is None and i + 1 < len(opens):
            continue  # an earlier unclosed tag, superseded by the next one
        content = text[start : close.start() if close else end]
        if _tidy(content):
            return content
    if opens:
        return ""
    close = _CLOSE_TAG.search(text)
    if close:  # opening tag missing (e.g. it was in the prompt): the last line before </answer>
        before = [ln for ln in text[: close.start()].splitlines() if ln.strip()]
        return before[-1] if before else ""
    return None


def _strip_edges(answer: str) -> str:
    answer = " ".join(answer.replace("**", "").split()).strip(_EDGE)
    if len(answer) >= 2 and answer[0] == answer[-1] == "'":
        answer = answer[1:-1].strip(_EDGE)
    return answer


def _tidy(answer: str) -> str:
    """Stray or truncated answer tags, bold markers, quotes and extra whitespace removed; ``\\boxed{}`` opened."""
    answer = _strip_edges(_PARTIAL_TAG.sub("", _ANY_TAG.sub(" ", answer)))
    boxed = extract_boxed(answer)
    return _strip_edges(boxed) if boxed is not None else answer


def locate_answer(text: Any) -> tuple[str, str]:
    r"""The final answer in a free-text reply and how it was found (the ``default`` policy).

    Order: the last non-empty ``<answer>...</answer>`` (an unclosed last tag runs to the end; a
    truncated ``</answe`` is dropped) -> "tag"; the last ``\boxed{}`` -> "boxed"; the last
    "Answer: ..." / "the answer is ..." line -> "answer_line"; the last non-empty line -> "tail".
    Whitespace is collapsed and surrounding quotes / bold markers removed. Nothing usable ->
    ``("", "empty")``.
    """
    if not isinstance(text, str) or not text.strip():
        return "", "empty"
    tagged = _from_tags(text)
    if tagged is not None:
        answer = _tidy(tagged)
        return (answer, "tag") if answer else ("", "empty")
    boxed = extract_boxed(text)
    boxed = _tidy(boxed) if boxed else ""
    if boxed:
        return boxed, "boxed"
    lines = [m.group("a") for m in _ANSWER_LINE.finditer(text) if _tidy(m.group("a"))]
    if lines:
        return _tidy(lines[-1]), "answer_line"
    tail = _tidy(text.strip().splitlines()[-1])
    return (tail, "tail") if tail else ("", "empty")


# --------------------------------------------------------------------------- named policies

EXTRACTION_POLICIES = ("default", "eval", "grpo", "boxed")
GRPO_MAX_CHARS = 300  # a longer "answer" is a rambling reply, not an answer
EVAL_TAIL_LINES = 3
_FIRST_TAGGED = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.I | re.S)
_ANSWER_COLON = re.compile(r"\banswer\s*[:：]", re.I)


def _first_tagged(text: str) -> str | None:
    m = _FIRST_TAGGED.search(text)
    return m.group(1) if m else None


def _eval_answer(text: str) -> str:
    tagged = _first_tagged(text)
    if tagged is not None:
        return _strip_edges(tagged)
    m = _ANSWER_COLON.search(text)
    if m:
        return _strip_edges(text[m.end() :])
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return _strip_edges("\n".join(lines[-EVAL_TAIL_LINES:]))


def _grpo_answer(text: str) -> str:
    tagged = _first_tagged(text)
    answer = _strip_edges(tagged if tagged is not None else text)
    return answer if len(answer) < GRPO_MAX_CHARS else ""


def extract_answer(text: Any, policy: str = "default") -> str | None:
    """The final answer in ``text`` under ``policy`` (one of ``EXTRACTION_POLICIES``), or None."""
    if policy not in EXTRACTION_POLICIES:
        raise ValueError(f"unknown extraction policy {policy!r}; choose one of {EXTRACTION_POLICIES}")
    if not isinstance(text, str) or not text.strip():
        return None
    if policy == "default":
        answer = locate_answer(text)[0]
    elif policy == "eval":
        answer = _eval_answer(text)
    elif policy == "grpo":
        answer = _grpo_answer(text)
    else:
        boxed = extract_boxed(text)
        answer = _strip_edges(boxed) if boxed is not None else ""
    return answer or None
