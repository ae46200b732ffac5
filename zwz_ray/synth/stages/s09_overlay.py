"""Stage 9, red-box overlay: the box (expanded, clamped) drawn on the full image; the question
asks about the box.

Stateless: Ray Data runs it as many small tasks.
"""

from __future__ import annotations

from zwz_ray.images import draw_box_overlay, encode_image
from zwz_ray.prompts import overlay_question
from zwz_ray.synth.config import InputConfig, OverlayConfig
from zwz_ray.synth.stages.base import QUESTION, SourceImages, Stage


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
