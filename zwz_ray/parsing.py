"""Reading model output: JSON objects, object lists, verdicts, answers, choices and boxes.

Shared by data synthesis and evaluation. Every function is pure and never raises on bad model
output: it returns ``None`` / ``[]`` (with a reason where the signature has one) instead.

:func:`normalize_answer` is the deterministic first pass of answer matching, used by stage 8
(consensus) and by the evaluation judge. Its choices, deliberately conservative:

* case, Unicode width, punctuation, the articles a/an/the and extra whitespace are ignored;
* number words become digits ("five", "twenty-one", "two hundred", "a dozen"); "5.0" -> "5",
  "1,000" -> "1000"; a leading minus sign is kept; leading zeros are kept ("007" != "7");
* only *spelling* variants of colours are merged (grey/gray, colour/color, golden/gold). Shades
  (navy vs blue, charcoal vs dark gray) are left to the LLM judge, which sees the question;
* units are stripped only when safe: a bare number followed by a generic counter word
  ("3 people", "4 items") becomes the number. Measurement units are kept (5 cm != 5 m) but their
  spellings are unified ("3 meters" == "3m", "50%" == "50 percent", "30°" == "30 degrees").
"""

from __future__ import annotations

import ast
import json
import math
import re
import unicodedata
from typing import Any

# --------------------------------------------------------------------------- JSON

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder(strict=False)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
MAX_JSON_STARTS = 64  # "{" positions tried per text; bounds the work on degenerate replies
MAX_JSON_REPAIRS = 8


def _decode_object_at(text: str, start: int, repair: bool) -> dict | None:
    try:
        value = _DECODER.raw_decode(text, start)[0]
    except (json.JSONDecodeError, RecursionError):
        return _repair_object_at(text, start) if repair else None
    return value if isinstance(value, dict) else None


def _balanced_span(text: str, start: int) -> str | None:
    """``text[start:]`` up to the brace that closes ``text[start]`` (quotes respected)."""
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            escaped = ch == "\\" and not escaped
            if ch == quote and not escaped:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _repair_object_at(text: str, start: int) -> dict | None:
    """Common near-JSON: trailing commas, Python literals with single quotes."""
    span = _balanced_span(text, start)
    if span is None:
        return None
    for attempt in (lambda s: json.loads(_TRAILING_COMMA.sub(r"\1", s), strict=False), ast.literal_eval):
        try:
            value = attempt(span)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _first_object(text: str) -> dict | None:
    start, tries = text.find("{"), 0
    while start != -1 and tries < MAX_JSON_STARTS:
        value = _decode_object_at(text, start, repair=tries < MAX_JSON_REPAIRS)
        if value is not None:
            return value
        start, tries = text.find("{", start + 1), tries + 1
    return None


def parse_json_output(text: Any) -> dict | None:
    """The first JSON object in ``text`` (fenced blocks first), or None.

    Tolerates code fences, prose around the JSON, trailing commas and single-quoted
    Python-style dicts.
    """
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text.strip():
        return None
    for chunk in [*_FENCE.findall(text), text]:
        value = _first_object(chunk)
        if value is not None:
            return value
    return None


# --------------------------------------------------------------------------- object lists (stage 2)

_MARKER = re.compile(
    r"^\s*(?:[-*+•·▪◦–—]+\s*"  # bullets
    r"|\(?\d{1,3}[.)\]:](?=\s|$)\s*"  # 1.  1)  (1)  1:
    r"|\[\d{1,3}\]\s*"  # [1]
    r"|#\d{1,3}[.):]?\s*"  # #1
    r"|\d{1,3}\s+[-–—]\s+)"  # 1 - name
)
_QUOTES = "\"'`“”‘’«»"
_DESCRIPTION = re.compile(r":\s|\s[-–—]\s")


def _strip_marker(item: str) -> str:
    return _MARKER.sub("", item, count=1)


def _clean_name(item: str) -> str:
    name = _strip_marker(item).replace("**", "").replace("__", "")
    name = _DESCRIPTION.split(name, maxsplit=1)[0]  # "red cup: a cup on the table" -> "red cup"
    name = " ".join(name.split())
    return name.strip(_QUOTES + " .,;:!?").strip()


def clean_object_names(names: Any, min_chars: int = 2, max_chars: int = 49) -> list[str]:
    """Object names without numbering, bullets, quotes or trailing punctuation.

    Duplicates (case-insensitive) and names outside ``min_chars..max_chars`` characters are
    dropped; order is kept. Non-string items are skipped.
    """
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)):
        return []
    seen: set[str] = set()
    out: list[str] = []
    for item in names:
        if not isinstance(item, str):
            continue
        name = _clean_name(item)
        key = name.casefold()
        if min_chars <= len(name) <= max_chars and key not in seen:
            seen.add(key)
            out.append(name)
    return out


def _json_list(text: str) -> list | None:
    obj = parse_json_output(text)
    if obj is not None:
        lists = [v for v in obj.values() if isinstance(v, list)]
        return lists[0] if lists else None
    start = text.find("[")
    if start == -1:
        return None
    try:
        value = _DECODER.raw_decode(text, start)[0]
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def parse_numbered_list(text: Any) -> list[str]:
    """Items of a numbered or bulleted list in free text (markers removed, not yet cleaned).

    Falls back to a JSON list (``{"objects": [...]}`` or ``[...]``), then to a single
    comma-separated line, then to one item per line. Lines ending in ``:`` are headings.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    marked = [_strip_marker(ln).strip() for ln in lines if _MARKER.match(ln)]
    if marked:
        return [m for m in marked if m]
    found = _json_list(text)
    if found is not None:
        return [str(v).strip() for v in found if isinstance(v, (str, int, float)) and str(v).strip()]
    lines = [ln for ln in lines if not ln.endswith(":")]
    if len(lines) == 1 and "," in lines[0]:
        return [p.strip() for p in lines[0].split(",") if p.strip()]
    return lines


# --------------------------------------------------------------------------- verdicts (stage 6)

_SEP = r"[\s*_:=\-\"']{0,12}"  # bounded, so no catastrophic backtracking on long blank runs
_VERDICT = re.compile(rf"\b(?:valid|verdict|validity)\b{_SEP}(yes|no|true|false|valid|invalid)\b", re.I)
_REASON = re.compile(r"\breason(?:ing)?\b[\s*_]{0,6}[:=\-](.+)", re.I | re.S)
_BARE_VERDICT = re.compile(r"^[\s*_\"']{0,12}(yes|no)\b", re.I)
_TRUE = {"yes", "true", "valid", "y", "1"}
_FALSE = {"no", "false", "invalid", "n", "0"}


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    word = str(value).strip().strip(".!\"'").casefold()
    return True if word in _TRUE else False if word in _FALSE else None


def _json_verdict(text: str) -> tuple[bool | None, str] | None:
    obj = parse_json_output(text)
    if obj is None:
        return None
    fields = {str(k).casefold(): v for k, v in obj.items()}
    if "valid" not in fields:
        return None
    return _as_bool(fields["valid"]), str(fields.get("reason", "")).strip()


def parse_verdict(text: Any) -> tuple[bool | None, str]:
    """``(valid, reason)`` from a validation reply: JSON ``{"reason", "valid"}`` or free text.

    Free text: the last ``VALID: Yes/No`` (also "Verdict: invalid", bold markdown), or a reply
    that starts with Yes/No. The reason is the ``REASON:`` text if present, else the whole reply.
    When no verdict is found the result is ``(None, why)``.
    """
    if not isinstance(text, str) or not text.strip():
        return None, "empty reply"
    found = _json_verdict(text)
    if found is not None and found[0] is not None:
        return found
    matches = list(_VERDICT.finditer(text)) or list(_BARE_VERDICT.finditer(text))
    if not matches:
        return None, f"no verdict in reply: {text.strip()[:80]!r}"
    verdict = _as_bool(matches[-1].group(1))
    reason = _REASON.search(text)
    body = reason.group(1) if reason else text
    body = _VERDICT.sub("", body)
    return verdict, " ".join(body.split()).strip(" *_")


# --------------------------------------------------------------------------- answers (stages 7, 11 and evaluation)

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


def extract_answer(text: Any) -> tuple[str, str]:
    r"""The final answer in a free-text reply and how it was found.

    Order: the last non-empty ``<answer>...</answer>`` (an unclosed last tag runs to the end; a
    truncated ``</answe`` is dropped) -> "tag"; the last ``\boxed{}`` -> "boxed"; the last
    "Answer: ..." / "the answer is ..." line -> "answer_line"; the last non-empty line -> "tail".
    Whitespace is collapsed and surrounding quotes / bold markers removed. Nothing usable ->
    ``("", "empty")``. Synthesis (consensus, difficulty) and the evaluation judge both use this.
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


_CHOICE_START = re.compile(r"^[\s(\[*_\"']*([A-Z])(?:[)\]*_\"'.:,]|\s*$|\s+[-–—])")  # "B", "(B)", "B. red"; not "A cat"
_CHOICE_WORD = re.compile(
    r"\b(?i:option|choice|answer|choose|pick|select|go with)\b[\s*_:]{0,6}(?i:is\b[\s*_:]{0,6})?"
    r"(?i:option\s{1,3})?[(\[]?([A-Z])\b(?![\w'])"
)
_CHOICE_PAREN = re.compile(r"(?<![\w(])\(?([A-Z])\)(?!\w)")


def parse_choice(text: Any, letters: str = "ABCD", options: list[str] | None = None) -> str | None:
    """The option letter a multiple-choice reply picks, or None.

    Reads JSON ``{"answer": "B"}``, ``<answer>B</answer>``, ``\\boxed{B}``, "B", "(B)", "B. red",
    "Option B" and, when ``options`` are given, the option's text itself ("red" -> its letter).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    obj = parse_json_output(text)
    answer = str(obj["answer"]) if obj is not None and "answer" in obj else extract_answer(text)[0]
    answer = answer.strip()
    if len(answer) == 1 and answer.upper() in letters:
        return answer.upper()
    for pattern in (_CHOICE_START, _CHOICE_WORD, _CHOICE_PAREN):
        m = pattern.search(answer)
        if m and m.group(1) in letters:
            return m.group(1)
    if options:
        key = normalize_answer(answer)
        hits = [letters[i] for i, opt in enumerate(options[: len(letters)]) if key and normalize_answer(opt) == key]
        if len(hits) == 1:
            return hits[0]
    return None


# --------------------------------------------------------------------------- answer normalisation

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_WORDS: dict[str, int] = (
    {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)} | {"dozen": 12, "hundred": 100}
)
_SPELLING = {
    "grey": "gray", "greyish": "grayish", "golden": "gold", "colour": "color", "colours": "colors",
    "coloured": "colored", "okay": "ok", "degree": "degrees",
    # unit spellings -> one symbol (the unit itself is kept: 5 cm != 5 m)
    "metre": "m", "metres": "m", "meter": "m", "meters": "m",
    "centimetre": "cm", "centimetres": "cm", "centimeter": "cm", "centimeters": "cm",
    "millimetre": "mm", "millimetres": "mm", "millimeter": "mm", "millimeters": "mm",
    "kilometre": "km", "kilometres": "km", "kilometer": "km", "kilometers": "km",
    "gram": "g", "grams": "g", "kilogram": "kg", "kilograms": "kg",
}
_ARTICLES = {"a", "an", "the"}
_COUNTERS = {"item", "items", "object", "objects", "piece", "pieces", "pcs", "unit", "units",
             "time", "times", "people", "persons", "person", "instance", "instances", "total"}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_GLUED_UNIT = re.compile(r"(?<=\d)(?=(?:km|cm|mm|kg|m|g|meters?|metres?|ft|in|lbs?|oz|px)\b)")  # "5m" -> "5 m"
_DECIMAL = re.compile(r"\d+\.\d+")
_NON_WORD = re.compile(r"[^\w\s.\-]|_")
_HYPHEN = re.compile(r"-(?!\d)|(?<=\S)-")  # a hyphen separates words, except a leading minus sign
_LONE_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")


def _canonical_decimal(m: re.Match) -> str:
    whole, frac = m.group(0).split(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _number_words(tokens: list[str]) -> list[str]:
    """Number words -> digits: "five" -> 5, "twenty one" -> 21, "two hundred five" -> 205, "a dozen" -> 12.

    Only runs of number words combine; "20 one" stays two tokens.
    """
    out: list[str] = []
    growing = False  # out[-1] was built from number words and can still take a smaller part
    for tok in tokens:
        value = NUMBER_WORDS.get(tok)
        prev = out[-1] if out else None
        if value is None:
            out.append(tok)
            growing = False
            continue
        n = int(prev) if growing and prev is not None else None
        if tok in ("hundred", "dozen") and (prev == "a" or (n is not None and 1 <= n <= 9)):
            out[-1] = str(value * (n or 1))  # "a dozen", "two hundred"
        elif n is not None and n >= 100 and n % 100 == 0 and value < 100:
            out[-1] = str(n + value)  # "one hundred twenty"
        elif n is not None and n % 10 == 0 and n % 100 >= 20 and 0 < value < 10:
            out[-1] = str(n + value)  # "twenty one"
        else:
            out.append(str(value))
        growing = tok != "dozen"
    return out


def normalize_answer(s: Any) -> str:
    """A canonical form of a short answer for exact matching (see the module docstring)."""
    if s is None:
        return ""
    text = unicodedata.normalize("NFKC", str(s)).casefold().replace("per cent", "percent")
    text = _THOUSANDS.sub("", text).replace("%", " percent ").replace("°", " degrees ")
    text = _GLUED_UNIT.sub(" ", text)
    text = _HYPHEN.sub(" ", _NON_WORD.sub(" ", text))
    text = _LONE_DOT.sub(" ", text)
    text = _DECIMAL.sub(_canonical_decimal, text)
    tokens = _number_words([_SPELLING.get(t, t) for t in text.split()])
    kept = [t for t in tokens if t not in _ARTICLES]
    tokens = kept or tokens
    if len(tokens) == 2 and tokens[1] in _COUNTERS and _is_number(tokens[0]):
        tokens = tokens[:1]
    return " ".join(tokens)


def _is_number(token: str) -> bool:
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False


# --------------------------------------------------------------------------- boxes (stage 3 with a VLM grounder)

_BOX_KEYS = ("box", "bbox", "bbox_2d", "box_2d", "bounding_box", "boxes", "bboxes")
_NUM = r"(-?\d+(?:\.\d+)?)"
_FOUR = re.compile(rf"[\[(]\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*[\])]")
_PAIRS = re.compile(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*(?:,|to|-|<\|box_end\|><\|box_start\|>)?\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _box_values(obj: Any, depth: int = 0) -> list[float] | None:
    if depth > 4 or obj is None:
        return None
    if isinstance(obj, dict):
        keys = {str(k).casefold(): v for k, v in obj.items()}
        for key in _BOX_KEYS:
            if key in keys:
                return _box_values(keys[key], depth + 1)
        return None
    if isinstance(obj, (list, tuple)):
        if len(obj) == 4 and all(not isinstance(v, (list, tuple, dict)) for v in obj):
            values = [_number(v) for v in obj]
            return None if None in values else values
        return _box_values(obj[0], depth + 1) if len(obj) >= 1 else None
    if isinstance(obj, str):
        parsed = parse_json_output(obj)
        if parsed is not None:
            return _box_values(parsed, depth + 1)
        m = _FOUR.search(obj) or _PAIRS.search(obj)
        return [float(g) for g in m.groups()] if m else None
    return None


def parse_box(obj_or_text: Any, coords: str = "absolute", width: float | None = None,
              height: float | None = None) -> tuple[float, float, float, float] | None:
    """``(x1, y1, x2, y2)`` in pixels from a grounder reply, or None.

    Accepts ``{"box": [...]}`` (also ``bbox_2d`` and similar keys, or a list of such dicts: the
    first wins), a bare list, or text holding either (``[x1, y1, x2, y2]`` or ``(x1,y1),(x2,y2)``).
    Swapped corners are reordered. ``coords="relative1000"`` scales 0..1000 to ``width`` x
    ``height`` pixels. The box is not clamped to the image (stage 4 does that).
    """
    values = _box_values(obj_or_text)
    if values is None:
        return None
    x1, y1, x2, y2 = values
    if coords == "relative1000":
        if not width or not height:
            return None
        x1, x2, y1, y2 = (x1 * width / 1000, x2 * width / 1000, y1 * height / 1000, y2 * height / 1000)
    elif coords != "absolute":
        return None
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
