"""Stage 3, grounding: each object name becomes one box, or a drop reason.

* :class:`Sam3Grounding` (the paper): SAM3 text-prompted detection via transformers. The image
  is encoded once and all its object names are grounded against that encoding. Kept only when
  exactly one instance scores above ``instance_threshold`` (0: ``no_box``, more: ``not_unique``)
  and that instance scores at least ``score_threshold`` (else ``low_score``).
* :class:`VLMGrounding`: the teacher VLM answers with a box (``VLM_BOX_SCHEMA``), in
  Qwen2.5-VL absolute pixels of the image it saw, or Qwen3-VL 0..1000 relative coordinates;
  :func:`parse_box` reads it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from PIL import Image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, parse_json, user_message
from zwz_ray.prompts import BOX_COORDS, grounding_query, vlm_grounding_prompt
from zwz_ray.synth.accounting import COUNTERS
from zwz_ray.synth.config import GroundingModelConfig, InputConfig
from zwz_ray.synth.stages.base import OBJECT, ModelStage, SourceImages, Stage, bounded_array, json_object

READS = ("source", "object_name", "image_width", "image_height")
WRITES = ("grounding_box", "grounding_score")
TEXT_TOKENS = 32  # SAM3's text encoder length (its processor pads to 32 but does not truncate)
ABSOLUTE_COORD_MAX = 65535  # pixels; bounded so an integer cannot grow forever
RELATIVE_COORD_MAX = 1000


def vlm_box_schema(coords: str = "absolute") -> dict:
    """The VLM grounder's reply: ``{"box": [x1, y1, x2, y2]}`` as bounded integers."""
    if coords not in BOX_COORDS:
        raise ValueError(f"coords must be one of {BOX_COORDS}, got {coords!r}")
    top = RELATIVE_COORD_MAX if coords == "relative1000" else ABSOLUTE_COORD_MAX
    return json_object(box=bounded_array({"type": "integer", "minimum": 0, "maximum": top}, 4, 4))


VLM_BOX_SCHEMA = vlm_box_schema()


class Sam3Grounding(Stage):
    name = "grounding"
    reads, writes = READS, WRITES
    level_in = level_out = OBJECT

    def __init__(self, grounding: GroundingModelConfig, input: InputConfig, *, model=None, processor=None, **kw):
        super().__init__(**kw)
        self.cfg = grounding
        self.images = SourceImages(input.max_bytes, input.max_pixels)
        if model is None:
            from zwz_ray.engines.hf import pick_device
            from zwz_ray.models import load_grounding

            model, processor = load_grounding(grounding.model, device=pick_device(grounding.device))
        self.model, self.processor = model, processor
        self.forwards = self.prompts = 0

    def counters(self) -> dict[str, dict[str, int]]:
        counts = dict.fromkeys(COUNTERS, 0)
        counts.update(calls=self.forwards, samples=self.prompts, loads=1)  # the grounder loaded in __init__
        return {self.cfg.model: counts}

    def process(self, rows: list[dict]) -> list[list[dict]]:
        by_source: dict[str, list[dict]] = {}
        for row in rows:
            by_source.setdefault(row["source"], []).append(row)
        for group in by_source.values():
            image = self.images.load_for(self, group[0])
            if image is None:
                for row in group[1:]:
                    self.drop(row, "source_unreadable", group[0]["drop_detail"])
                continue
            step = self.cfg.max_prompts_per_forward
            for start in range(0, len(group), step):
                chunk = group[start : start + step]
                for row, found in zip(chunk, self.detect(image, [grounding_query(r["object_name"]) for r in chunk])):
                    self._decide(row, *found)
        return [[row] for row in rows]

    def detect(self, image: Image.Image, names: list[str]) -> list[tuple[list[float], list[list[float]]]]:
        """For each name: the scores and pixel boxes of the instances above ``instance_threshold``."""
        import torch

        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].to(device, dtype)
            vision = self.model.get_vision_features(pixel_values=pixels)
            text = self.processor.tokenizer(names, padding="max_length", max_length=TEXT_TOKENS, truncation=True, return_tensors="pt")
            out = self.model(vision_embeds=_repeat(vision, len(names)), input_ids=text["input_ids"].to(device),
                             attention_mask=text["attention_mask"].to(device))
            found = self.processor.post_process_object_detection(
                out, threshold=self.cfg.instance_threshold, target_sizes=[(image.height, image.width)] * len(names))
        self.forwards += 1
        self.prompts += len(names)
        return [(r["scores"].float().tolist(), r["boxes"].float().tolist()) for r in found]

    def _decide(self, row: dict, scores: list[float], boxes: list[list[float]]) -> None:
        cfg = self.cfg
        if not scores:
            self.drop(row, "no_box", f"no instance of {row['object_name']!r} scores >= {cfg.instance_threshold}")
        elif len(scores) > 1:
            self.drop(row, "not_unique", f"{len(scores)} instances score >= {cfg.instance_threshold}")
        elif scores[0] < cfg.score_threshold:
            self.drop(row, "low_score", f"score {scores[0]:.4f} < {cfg.score_threshold}")
        else:
            row["grounding_box"], row["grounding_score"] = [float(v) for v in boxes[0]], float(scores[0])


def _repeat(vision, n: int):
    """The vision encoding of one image, repeated for ``n`` text prompts (views, no copies)."""
    import torch

    def rep(value):
        if torch.is_tensor(value):
            return value.expand(n, *value.shape[1:])
        if isinstance(value, (tuple, list)):
            return type(value)(rep(v) for v in value)
        return value

    return type(vision)(**{key: rep(value) for key, value in vision.items()})


class VLMGrounding(ModelStage):
    name = "grounding"
    reads, writes = READS, WRITES
    level_in = level_out = OBJECT

    def __init__(self, engine_config: EngineConfig, grounding: GroundingModelConfig, input: InputConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = grounding
        self.schema = vlm_box_schema(grounding.coords)
        self.images = SourceImages(input.max_bytes, input.max_pixels)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        asked, views, requests = [], [], []
        for row in rows:
            image = self.images.load_for(self, row)
            if image is None:
                continue
            view = self.view(image)
            prompt = vlm_grounding_prompt(row["object_name"], self.cfg.coords)
            asked.append(row)
            views.append(view)
            requests.append(ChatRequest([user_message(prompt, [view])], SamplingParams(1, 0.0, 1.0, 64, self.seed(row)), self.schema))
        for row, view, result in zip(asked, views, self.chat(requests)):
            value = self.reply(row, result, self.schema)
            if value is not None:
                self._place(row, value, view)
        return [[row] for row in rows]

    def view(self, image: Image.Image) -> Image.Image:
        """What the model sees. For absolute coordinates its sides are multiples of ``resize_factor``
        within the engine's pixel budget, so the processor does not resize it again and the
        model's pixel coordinates map back exactly."""
        if self.cfg.coords != "absolute":
            return self.fit(image)
        f = self.cfg.resize_factor
        limit = self.engine_config.max_pixels or image.width * image.height
        scale = min(1.0, math.sqrt(limit / (image.width * image.height)))
        w, h = max(f, round(image.width * scale / f) * f), max(f, round(image.height * scale / f) * f)
        while w * h > limit and max(w, h) > f:
            w, h = (w - f, h) if w >= h else (w, h - f)
        return image if (w, h) == image.size else image.resize((w, h), Image.Resampling.BICUBIC)

    def _place(self, row: dict, value: dict, view: Image.Image) -> None:
        width, height = row["image_width"], row["image_height"]
        if self.cfg.coords == "relative1000":
            box = parse_box(value, "relative1000", width, height)
        else:
            box = parse_box(value, "absolute")
            if box is not None:
                sx, sy = width / view.width, height / view.height
                box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        if box is None:
            self.drop(row, "no_box", f"no box in {value}")
            return
        row["grounding_box"] = [float(v) for v in box]


# --------------------------------------------------------------------------- reading a VLM grounder's box

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
        parsed, _ = parse_json(obj)
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
