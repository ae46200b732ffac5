"""The zoom tool of the thinking-with-images baseline: reading tool calls, mapping boxes, cropping.

A reply is read as a final answer (an ``<answer>`` tag, or no tool call at all) or as one or more
``<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}</tool_call>``
blocks (the Qwen / Hermes style). ``bbox_2d`` always refers to the first image of the conversation
(the full source image), in the model family's convention:

* ``absolute`` (Qwen2.5-VL): pixels of the image as the model's processor resized it (Qwen's
  "smart resize": sides rounded to multiples of patch x merge within the processor's pixel bounds),
  mapped back to source pixels, as the VLM grounding stage (synthesis stage 3) does;
* ``relative1000`` (Qwen3-VL): 0..1000 of the source width and height.

The box is clamped to the image and grown to ``min_side`` pixels (28: one merged Qwen2.5-VL patch),
cropped and upscaled like the micro-crops (Lanczos), without going past the processor's pixel budget.
A call that cannot be read is a :class:`ToolCall` with ``error`` set: recorded, never raised.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from zwz_ray.engines import Grammar, parse_json
from zwz_ray.images import micro_crop

TOOL_NAME = "image_zoom_in_tool"
COORDS = ("absolute", "relative1000")
RELATIVE_MAX = 1000
_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>.*?</answer>", re.DOTALL)


# --------------------------------------------------------------------------- how the processor resizes


@dataclass(frozen=True)
class Geometry:
    """A Qwen-VL image processor's resize rule: ``factor`` = patch size x merge size, pixel bounds."""

    factor: int
    min_pixels: int
    max_pixels: int

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the processor turns a ``width`` x ``height`` image into (Qwen's smart resize)."""
        f = self.factor
        w, h = max(f, round(width / f) * f), max(f, round(height / f) * f)
        if w * h > self.max_pixels:
            beta = math.sqrt(width * height / self.max_pixels)
            w, h = max(f, math.floor(width / beta / f) * f), max(f, math.floor(height / beta / f) * f)
        elif w * h < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (width * height))
            w, h = math.ceil(width * beta / f) * f, math.ceil(height * beta / f) * f
        return w, h


# The released checkpoints' preprocessor configs (Qwen2.5-VL-*-Instruct, Qwen3-VL-*-Instruct).
FAMILY_GEOMETRY = {
    "qwen2_5_vl": Geometry(28, 56 * 56, 12845056),
    "qwen3_vl": Geometry(32, 65536, 16777216),
}


def read_geometry(model_dir: str) -> Geometry | None:
    """The resize rule in a checkpoint's processor config (``processor_config.json`` or
    ``preprocessor_config.json``), or None when the directory has neither."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        proc = data.get("image_processor", data)
        size = proc.get("size") or {}
        lo = proc.get("min_pixels") or size.get("shortest_edge")
        hi = proc.get("max_pixels") or size.get("longest_edge")
        if "patch_size" in proc and lo and hi:
            return Geometry(int(proc["patch_size"]) * int(proc.get("merge_size", 1)), int(lo), int(hi))
    return None


def model_geometry(engine, family: str) -> Geometry:
    """What the evaluated model's processor does: its checkpoint's config when it is on this machine
    (hf, vllm, tiny models), else the family's released defaults; the engine's pixel limits win."""
    import os

    from zwz_ray.models import resolve_model

    found = None
    if engine.backend != "openai":
        path = resolve_model(engine.model)
        found = read_geometry(path) if os.path.isdir(path) else None
    base = found or FAMILY_GEOMETRY.get(family, FAMILY_GEOMETRY["qwen2_5_vl"])
    return Geometry(base.factor, engine.min_pixels or base.min_pixels, engine.max_pixels or base.max_pixels)


def _family_by_name(name: str) -> str:
    name = name.lower().replace(".", "_").replace("-", "_")
    return "qwen3_vl" if "qwen3_vl" in name else "qwen2_5_vl" if "qwen2_5_vl" in name else "unknown"


def resolve_coords(coords: str, engine) -> tuple[str, str]:
    """(coords, family) of an evaluated model: ``auto`` follows the model family (Qwen3-VL: 0..1000).

    An openai endpoint's family is read from its served name (its checkpoint is not on this machine).
    """
    from zwz_ray.models import model_family

    if engine.backend == "openai":
        family = _family_by_name(engine.served_model or engine.model or "")
    else:
        try:
            family = model_family(engine.model)
        except (OSError, ValueError):  # a hub id that cannot be reached offline: read the name
            family = _family_by_name(engine.model or "")
    if coords != "auto":
        return coords, family
    return ("relative1000" if family == "qwen3_vl" else "absolute"), family


# --------------------------------------------------------------------------- reading a reply


@dataclass
class ToolCall:
    """One ``<tool_call>`` block: the box as written, or why it could not be read."""

    raw: str
    bbox: list[float] | None = None
    error: str | None = None


def _numbers(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        return None
    out = [float(v) for v in value]
    return out if all(math.isfinite(v) for v in out) else None


def parse_call(body: str, closed: bool = True) -> ToolCall:
    """The box of one tool-call body (``{"name": ..., "arguments": {"bbox_2d": [...]}}``)."""
    raw = body.strip()
    if not closed:
        return ToolCall(raw, error="unclosed <tool_call> (the reply ended inside it)")
    value, why = parse_json(raw)
    if not isinstance(value, dict):
        return ToolCall(raw, error=f"not a JSON object: {why or type(value).__name__}")
    if value.get("name") != TOOL_NAME:
        return ToolCall(raw, error=f"unknown tool {value.get('name')!r}; the tool is {TOOL_NAME}")
    args = value.get("arguments", {})
    if isinstance(args, str):  # OpenAI-style clients send the arguments as a JSON string
        args, _ = parse_json(args)
    if not isinstance(args, dict) or "bbox_2d" not in args:
        return ToolCall(raw, error="no bbox_2d in the arguments")
    box = _numbers(args["bbox_2d"])
    if box is None:
        return ToolCall(raw, error=f"bbox_2d must be 4 numbers [x1, y1, x2, y2], got {args['bbox_2d']!r}")
    return ToolCall(raw, bbox=box)


def read_reply(text: str | None) -> tuple[str, list[ToolCall]]:
    """``("answer", [])`` for a final reply, ``("tool", calls)`` for a reply that calls the tool.

    An ``<answer>`` tag ends the episode even next to a tool call; a reply with neither is final too
    (the judging cascade reads what it can from it).
    """
    text = text or ""
    if _ANSWER.search(text):
        return "answer", []
    calls = [parse_call(m.group(1), bool(m.group(2))) for m in _CALL.finditer(text)]
    return ("tool", calls) if calls else ("answer", [])


# --------------------------------------------------------------------------- executing a call


def source_box(bbox: list[float], coords: str, width: int, height: int, geometry: Geometry) -> tuple[float, ...]:
    """The model's box in source-image pixels (corners ordered, not clamped)."""
    x1, y1, x2, y2 = bbox
    if coords == "relative1000":
        sx, sy = width / RELATIVE_MAX, height / RELATIVE_MAX
    elif coords == "absolute":
        seen_w, seen_h = geometry.resized(width, height)
        sx, sy = width / seen_w, height / seen_h
    else:
        raise ValueError(f"coords must be one of {COORDS}, got {coords!r}")
    x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def _grow(lo: float, hi: float, side: float, limit: float) -> tuple[float, float]:
    """[lo, hi] grown around its centre to ``side`` (at most ``limit``), kept inside [0, limit]."""
    if hi - lo >= side:
        return lo, hi
    side = min(side, limit)
    start = min(max((lo + hi) / 2 - side / 2, 0.0), limit - side)
    return start, start + side


def zoom_box(box: tuple[float, ...], width: int, height: int, min_side: int = 28) -> tuple[float, ...]:
    """Clamp each corner of a source-pixel box to the image, then grow each side to ``min_side``
    (a box off the image becomes a ``min_side`` strip at the nearest edge, as the corners clamp there)."""
    x1, y1, x2, y2 = box
    x1, x2 = _grow(min(max(x1, 0.0), width), min(max(x2, 0.0), width), min_side, width)
    y1, y2 = _grow(min(max(y1, 0.0), height), min(max(y2, 0.0), height), min_side, height)
    return (x1, y1, x2, y2)


@dataclass(frozen=True)
class ZoomTool:
    """``image_zoom_in_tool``: the region of the source image a call names, enlarged."""

    coords: str
    geometry: Geometry
    min_side: int = 28
    upscale: float = 2.0

    def __call__(self, image: Image.Image, call: ToolCall) -> tuple[Image.Image | None, dict]:
        """(the crop, or None) and the record of the call: ``bbox_2d``, ``box`` (source pixels), ``clamped``
        (the box left the image or was smaller than ``min_side``), ``error``."""
        record = {"bbox_2d": call.bbox, "box": None, "clamped": False, "error": call.error}
        if call.error:
            return None, record
        asked = source_box(call.bbox, self.coords, image.width, image.height, self.geometry)
        box = zoom_box(asked, image.width, image.height, self.min_side)
        record.update(box=[round(v, 2) for v in box], clamped=any(abs(a - b) > 1e-6 for a, b in zip(asked, box)))
        area = max(1.0, (box[2] - box[0]) * (box[3] - box[1]))
        # no larger than the processor would keep: past max_pixels it only shrinks the crop again
        scale = max(1.0, min(self.upscale, math.sqrt(self.geometry.max_pixels / area)))
        return micro_crop(image, box, scale), record


# --------------------------------------------------------------------------- a frame for random-weight models


def turn_grammar(coords: str, final: bool, answer_chars: int = 32) -> Grammar:
    """A reply that is one tool call or one ``<answer>`` (only the answer on the last turn).

    JSON schema cannot say "this object or that tagged text", an EBNF grammar can. Numbers are
    bounded (0..1000 relative, 4 digits absolute: the tool clamps) and so is the answer, so a random model ends in time.
    """
    num = '"1000" | [0-9] | [1-9] [0-9] | [1-9] [0-9] [0-9]' if coords == "relative1000" else '"0" | [1-9] [0-9]{0,3}'
    call = ('"<tool_call>\\n{\\"name\\": \\"' + TOOL_NAME + '\\", \\"arguments\\": {\\"bbox_2d\\": [" num ", " num ", " num ", " num '
            '"]}}\\n</tool_call>"')
    rules = [f"root ::= {'answer' if final else 'call | answer'}",
             f'answer ::= "<answer>" [^<>\\n\\r]{{1,{answer_chars}}} "</answer>"']
    if not final:
        rules += [f"call ::= {call}", f"num ::= {num}"]
    return Grammar.ebnf("\n".join(rules))
