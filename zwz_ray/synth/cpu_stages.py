"""The CPU stages: image pool (1), micro-crop (4), red-box overlay (9), MCQ assembly (10) and
output rows (12).

Stateless: Ray Data runs them as many small tasks.
"""

from __future__ import annotations

import hashlib
import json

from zwz_ray.images import (
    ImageDecodeError,
    box_area_fraction,
    clamp_box,
    decode_image,
    draw_box_overlay,
    encode_image,
    is_empty_box,
    micro_crop,
    pixel_box,
    probe_size,
    read_bytes,
)
from zwz_ray.prompts import overlay_question
from zwz_ray.synth.config import CropConfig, InputConfig, MCQConfig, OverlayConfig
from zwz_ray.synth.mcq import build_mcq, stable_seed
from zwz_ray.synth.stage import IMAGE, OBJECT, QUESTION, SourceImages, Stage


class ImagePool(Stage):
    """Stage 1: read every image, reject unreadable ones and those with a side <= ``min_side``."""

    name = "image_pool"
    reads = ("source",)
    writes = ("image_width", "image_height", "object_index", "question_index")
    level_in = level_out = IMAGE

    def __init__(self, input: InputConfig, **kw):
        super().__init__(**kw)
        self.cfg = input
        self.images = SourceImages(input.max_bytes, input.max_pixels)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        return [[self._check(row)] for row in rows]

    def _check(self, row: dict) -> dict:
        row.update(object_index=-1, question_index=-1)
        try:
            data = read_bytes(row["source"], self.cfg.max_bytes)
            width, height = probe_size(data)
            if min(width, height) <= self.cfg.min_side:
                return self.drop(row, "too_small", f"{width}x{height}, a side is <= {self.cfg.min_side}")
            image = decode_image(data, max_pixels=self.cfg.max_pixels)  # proves the pixels decode
        except ImageDecodeError as exc:
            return self.drop(row, exc.reason, exc.detail)
        self.images.remember(row["source"], image)  # the next stages in this worker reuse it
        row.update(image_width=image.width, image_height=image.height)
        return row


class MicroCrop(Stage):
    """Stage 4: clamp the box; drop empty and too-large boxes; crop and upscale (Lanczos)."""

    name = "crop"
    reads = ("source", "grounding_box", "image_width", "image_height")
    writes = ("bbox", "crop")
    level_in = level_out = OBJECT

    def __init__(self, crop: CropConfig, input: InputConfig, **kw):
        super().__init__(**kw)
        self.cfg = crop
        self.images = SourceImages(input.max_bytes, input.max_pixels)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        return [[self._crop(row)] for row in rows]

    def _crop(self, row: dict) -> dict:
        w, h = row["image_width"], row["image_height"]
        box = clamp_box(row["grounding_box"], w, h)
        if is_empty_box(box):
            return self.drop(row, "empty_box", f"{row['grounding_box']} in a {w}x{h} image")
        pbox = pixel_box(box, w, h)
        frac = box_area_fraction(pbox, w, h)
        if frac >= self.cfg.max_area_frac:
            return self.drop(row, "box_too_large", f"covers {frac:.3f} of the image (limit {self.cfg.max_area_frac})")
        image = self.images.load_for(self, row)
        if image is None:
            return row
        row["bbox"] = list(pbox)
        row["crop"] = encode_image(micro_crop(image, pbox, self.cfg.upscale), "PNG")
        return row


class Overlay(Stage):
    """Stage 9: the red box (expanded, clamped) on the full image; the question asks about the box."""

    name = "overlay"
    reads = ("source", "bbox", "question")
    writes = ("image", "overlay_question")
    level_in = level_out = QUESTION

    def __init__(self, overlay: OverlayConfig, input: InputConfig, **kw):
        super().__init__(**kw)
        self.cfg = overlay
        self.images = SourceImages(input.max_bytes, input.max_pixels)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        drawn: dict[tuple, bytes] = {}  # the questions of one object share its overlay
        return [[self._overlay(row, drawn)] for row in rows]

    def _overlay(self, row: dict, drawn: dict) -> dict:
        key = (row["source"], tuple(row["bbox"]))
        if key not in drawn:
            image = self.images.load_for(self, row)
            if image is None:
                return row
            cfg = self.cfg
            overlay = draw_box_overlay(image, row["bbox"], width=cfg.width, color=tuple(cfg.color), expand_frac=cfg.expand_frac)
            drawn[key] = encode_image(overlay, "PNG")
        row["image"] = drawn[key]
        row["overlay_question"] = overlay_question(row["question"])
        return row


class MCQAssembly(Stage):
    """Stage 10, second half: the answer shuffled among the cleaned distractors (seeded), letters A-D."""

    name = "mcq"
    reads = ("source", "object_index", "question", "overlay_question", "answer_text", "distractors")
    writes = ("problem", "answer", "options")
    level_in = level_out = QUESTION

    def __init__(self, mcq: MCQConfig, **kw):
        super().__init__(**kw)
        self.cfg = mcq

    def process(self, rows: list[dict]) -> list[list[dict]]:
        return [[self._assemble(row)] for row in rows]

    def _assemble(self, row: dict) -> dict:
        seed = stable_seed(row["source"], row["object_index"], row["question"], base_seed=self.cfg.seed)
        try:
            mcq = build_mcq(row["overlay_question"], row["answer_text"], row["distractors"], seed, self.cfg.n_distractors)
        except ValueError as exc:
            return self.drop(row, "too_few_distractors", f"{exc}; candidates {row['distractors']}")
        row.update(problem=mcq.problem, answer=mcq.answer_letter, options=mcq.options)
        return row


def item_id(source: str, bbox: list, question: str) -> str:
    """Stable row id: a hash of the source image, the box and the question."""
    text = json.dumps([source, [int(v) for v in bbox], question.strip()], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


class OutputRows(Stage):
    """Stage 12: the id and the provenance of every kept row."""

    name = "output"
    reads = ("source", "bbox", "question", "problem", "answer")
    writes = ("id", "provenance")
    level_in = level_out = QUESTION

    def __init__(self, provenance: dict, **kw):
        super().__init__(**kw)
        self.provenance = provenance

    def process(self, rows: list[dict]) -> list[list[dict]]:
        for row in rows:
            row["id"] = item_id(row["source"], row["bbox"], row["question"])
            row["provenance"] = json.dumps({**self.provenance, "object_index": row["object_index"],
                                            "question_index": row["question_index"]}, sort_keys=True)
        return [[row] for row in rows]
