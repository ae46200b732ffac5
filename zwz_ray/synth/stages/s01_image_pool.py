"""Stage 1, the image pool: the image list (folders, files, globs, URIs, the demo scenes, a seeded
subset), then every image read once; unreadable images and those with a side <= ``min_side`` drop."""

from __future__ import annotations

from zwz_ray.images import IMAGE_EXTENSIONS, ImageDecodeError, ImageInputError, decode_image, list_images, probe_size, read_bytes
from zwz_ray.synth.config import InputConfig, SynthConfig
from zwz_ray.synth.stages.base import IMAGE, SourceImages, Stage, stable_seed
from zwz_ray.uris import absolute


def select_images(cfg: SynthConfig) -> list[str]:
    """The images to process, sorted. A missing path raises ``ImageInputError`` before any work starts.

    With ``input.max_images`` a seeded subset is taken; the ranking depends only on
    (seed, path), so a larger ``max_images`` selects a superset of a smaller one.
    """
    if not cfg.input.paths and not cfg.input.generate_demo:
        raise ImageInputError("input.paths is empty: give image folders, files, globs or URIs (or set input.generate_demo)")
    paths = [absolute(p) for p in cfg.input.paths]
    if cfg.input.generate_demo:
        from zwz_ray.demo import ensure_demo_images

        demo = cfg.demo
        ensure_demo_images(absolute(demo.dir), demo.n, demo.seed, (demo.width, demo.height))
        if absolute(demo.dir) not in paths:
            paths.append(absolute(demo.dir))
    sources = list_images(paths)
    if not sources:
        raise ImageInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {cfg.input.paths}")
    limit = cfg.input.max_images
    if limit is not None and len(sources) > limit:
        ranked = sorted(sources, key=lambda s: stable_seed("sample", s, base_seed=cfg.input.sample_seed))
        sources = sorted(ranked[:limit])
    return sources


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
