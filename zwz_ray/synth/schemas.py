"""JSON schemas for the teacher's structured outputs (stages 2, 3, 5, 6, 7, 8, 10, 11).

Every string is bounded by ``maxLength`` (or an ``enum``) and every array by ``maxItems``, so
constrained decoding (xgrammar) always terminates, even for a random-weight model. Properties are
listed in the order the model should write them: reasoning before verdicts.
"""

from __future__ import annotations

from zwz_ray.prompts import BOX_COORDS, QUESTION_TYPES

NAME_MIN_CHARS, NAME_MAX_CHARS = 2, 49  # the paper keeps object names of 2..49 characters
QUESTION_MAX_CHARS = 160
REASON_MAX_CHARS = 300
REASONING_MAX_CHARS = 600
ANSWER_MAX_CHARS = 40
ABSOLUTE_COORD_MAX = 65535  # pixels; bounded so an integer cannot grow forever
RELATIVE_COORD_MAX = 1000


def _obj(**props: dict) -> dict:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _str(max_len: int, min_len: int = 1) -> dict:
    return {"type": "string", "minLength": min_len, "maxLength": max_len}


def _array(items: dict, max_items: int, min_items: int = 0) -> dict:
    return {"type": "array", "items": items, "minItems": min_items, "maxItems": max_items}


def _yes_no() -> dict:
    return {"type": "string", "enum": ["Yes", "No"]}


def proposal_schema(max_objects: int = 20) -> dict:
    """Stage 2: ``{"objects": [name, ...]}``."""
    return _obj(objects=_array(_str(NAME_MAX_CHARS, NAME_MIN_CHARS), max_objects))


def questions_schema(n: int = 3) -> dict:
    """Stage 5: ``{"questions": [{"type": ..., "question": ...}]}``, possibly empty."""
    item = _obj(type={"type": "string", "enum": list(QUESTION_TYPES)}, question=_str(QUESTION_MAX_CHARS, 5))
    return _obj(questions=_array(item, n))


def distractor_schema(n: int = 3) -> dict:
    """Stage 10: exactly ``n`` wrong options."""
    return _obj(options=_array(_str(ANSWER_MAX_CHARS), n, n))


def vlm_box_schema(coords: str = "absolute") -> dict:
    """Stage 3 with a VLM grounder: ``{"box": [x1, y1, x2, y2]}`` as bounded integers."""
    if coords not in BOX_COORDS:
        raise ValueError(f"coords must be one of {BOX_COORDS}, got {coords!r}")
    top = RELATIVE_COORD_MAX if coords == "relative1000" else ABSOLUTE_COORD_MAX
    return _obj(box=_array({"type": "integer", "minimum": 0, "maximum": top}, 4, 4))


def difficulty_schema(letters: str | list[str] = "ABCD") -> dict:
    """Stage 11: ``{"answer": letter}``."""
    return _obj(answer={"type": "string", "enum": list(letters)})


PROPOSAL_SCHEMA = proposal_schema()
QUESTIONS_SCHEMA = questions_schema()
VALIDATION_SCHEMA = _obj(reason=_str(REASON_MAX_CHARS), valid=_yes_no())
ANSWER_SCHEMA = _obj(reasoning=_str(REASONING_MAX_CHARS, 0), answer=_str(ANSWER_MAX_CHARS))
EQUIVALENCE_SCHEMA = _obj(same=_yes_no())
DISTRACTOR_SCHEMA = distractor_schema()
VLM_BOX_SCHEMA = vlm_box_schema()
DIFFICULTY_SCHEMA = difficulty_schema()
