"""Answer normalisation and numbers.

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

import math
import re
import unicodedata
from typing import Any

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


_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?$")


def numbers_in(text: Any) -> list[float]:
    """Every number in the normalised text, in order."""
    return [float(t) for t in normalize_answer(text).split() if _NUMBER.match(t)]


def as_number(text: Any) -> float | None:
    """The value when the whole normalised text is one number, else None."""
    norm = normalize_answer(text)
    return float(norm) if _NUMBER.match(norm) else None
