"""Reading a model's answer: extraction, normalisation and multiple-choice options.

Pure functions of strings, shared by the judge cascade and the loaders:

* :func:`extract_answer` takes ``<answer>...</answer>`` (the student format), else ``\\boxed{}``,
  else an ``Answer:`` / ``the answer is`` line, else the last non-empty line;
* :func:`normalize_answer` folds case, punctuation, articles, whitespace, number words
  ("five" -> "5", "5.0" -> "5") and a few unit and colour spellings;
* :func:`parse_options` reads ``(A) red`` / ``A. red`` / ``A) red`` choices out of a question.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------- extraction

_TAG_CLOSED = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
_TAG_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_TAG_ANY = re.compile(r"<\s*/?\s*answer\s*>|<\s*/?\s*(?:a|an|ans|answ|answe|answer)?\s*$", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"(?:final\s+answer|answer)\s*(?::|：|\bis\b)\s*(.+)", re.IGNORECASE)
_WRAPPERS = " \t\r\n\"'`*_"


def _boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return text[i + 1 :]


def _clean(text: str) -> str:
    text = _TAG_ANY.sub(" ", text)
    text = text.strip(_WRAPPERS)
    return re.sub(r"\s+", " ", text).strip(_WRAPPERS)


def extract_answer(response: str | None) -> str | None:
    """The final answer in a model response, or None when there is none."""
    if not response or not response.strip():
        return None
    closed = _TAG_CLOSED.findall(response)
    if closed:
        return _clean(closed[-1]) or None
    opened = list(_TAG_OPEN.finditer(response))
    if opened:  # an unclosed tag (the model ran out of tokens): everything after it
        return _clean(response[opened[-1].end() :]) or None
    boxed = _boxed(response)
    if boxed is not None:
        return _clean(boxed) or None
    lines = [ln for ln in response.splitlines() if ln.strip()]
    for line in reversed(lines):
        m = _ANSWER_LINE.search(line)
        if m and _clean(m.group(1)):
            return _clean(m.group(1))
    return _clean(lines[-1]) if lines else None


# --------------------------------------------------------------------------- normalisation

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | _TENS | {"hundred": 100, "none": 0, "no": 0, "single": 1}
_SYNONYMS = {
    "grey": "gray", "greyish": "grayish", "golden": "gold", "colour": "color", "colours": "colors",
    "metres": "m", "metre": "m", "meters": "m", "meter": "m", "centimetres": "cm", "centimetre": "cm",
    "centimeters": "cm", "centimeter": "cm", "millimeters": "mm", "millimeter": "mm", "kilometers": "km",
    "kilometer": "km", "kilometres": "km", "kilometre": "km", "kilograms": "kg", "kilogram": "kg",
    "grams": "g", "gram": "g", "percent": "%", "per cent": "%", "degrees": "°", "degree": "°",
    "o'clock": "oclock", "okay": "ok",
}
_ARTICLES = {"a", "an", "the"}
_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?$")


def _number_words(tokens: list[str]) -> list[str]:
    """"twenty five" / "twenty-five" -> "25"; "five" -> "5" (only where a number word stands alone)."""
    out: list[str] = []
    for tok in tokens:
        parts = tok.split("-")
        if len(parts) == 2 and parts[0] in _TENS and parts[1] in NUMBER_WORDS and NUMBER_WORDS[parts[1]] < 10:
            out.append(str(_TENS[parts[0]] + NUMBER_WORDS[parts[1]]))
        elif tok in NUMBER_WORDS and tok not in ("no", "none", "single"):
            if out and out[-1].isdigit() and int(out[-1]) in _TENS.values() and NUMBER_WORDS[tok] < 10:
                out[-1] = str(int(out[-1]) + NUMBER_WORDS[tok])
            else:
                out.append(str(NUMBER_WORDS[tok]))
        else:
            out.append(tok)
    return out


def canonical_number(token: str) -> str:
    """"5.0" -> "5", "05" -> "5", "1,000" -> "1000"; other tokens unchanged."""
    plain = token.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", token) else token
    if not _NUMBER.match(plain):
        return token
    value = float(plain)
    return str(int(value)) if value.is_integer() else repr(value)


def normalize_answer(text: str | None) -> str:
    """Lower case, no punctuation or articles, single spaces, digits for number words, unit and colour spellings."""
    if not text:
        return ""
    s = text.lower().replace("per cent", "percent")
    s = re.sub(r"(\d)([a-z%°])", r"\1 \2", s)  # "5m" -> "5 m"
    s = re.sub(r"(?<!\d)[.,](?!\d)|[.,]$", " ", s)  # punctuation dots/commas, not decimal points
    s = re.sub(r"[^\w\s.%°,'-]|_", " ", s)
    s = re.sub(r"(?<![a-z0-9])'|'(?![a-z])", " ", s)
    tokens = [t.strip("-") for t in s.split()]
    tokens = [_SYNONYMS.get(t, t) for t in tokens if t]
    tokens = _number_words(tokens)
    tokens = [canonical_number(t) for t in tokens]
    kept = [t for t in tokens if t not in _ARTICLES]
    return " ".join(kept or tokens)


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
