"""Stage 4, micro-crop: clamp the box, drop empty and too-large boxes, crop and upscale (Lanczos).

Stateless: Ray Data runs it as many small tasks.
"""

from __future__ import annotations

from zwz_ray.images import box_area_fraction, clamp_box, encode_image, is_empty_box, micro_crop, pixel_box
from zwz_ray.synth.config import CropConfig, InputConfig
from zwz_ray.synth.stages.base import OBJECT, SourceImages, Stage


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
