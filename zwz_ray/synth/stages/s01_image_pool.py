"""Stage 1, the image pool: the image list (folders, files, globs, URIs, the demo scenes, a seeded
subset), then every image read once; unreadable images and those with a side <= ``min_side`` drop.

``input.max_images`` takes its subset AFTER the size / readability filter, as the reference does
(``create_vqa.py`` checks every image, then ``random.sample(valid, max_images)`` with seed 42): N
usable images come out when N exist. A bucket of 10^5 images is not opened one by one on the
driver: candidates are ranked by a seeded hash of their path, their headers are read in parallel
(``input.probe_threads``) in rank order, a round of ``input.probe_batch`` at a time, and the
selection stops at N usable ones. Usability depends only on the file, and the ranking only on
(seed, path), so a larger N selects a superset of a smaller one.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from zwz_ray.images import IMAGE_EXTENSIONS, ImageDecodeError, ImageInputError, decode_image, list_images, probe_size, read_bytes
from zwz_ray.logs import get_logger
from zwz_ray.synth.config import InputConfig, SynthConfig
from zwz_ray.synth.stages.base import IMAGE, SourceImages, Stage, stable_seed
from zwz_ray.uris import absolute, filesystem

log = get_logger(__name__)

HEADER_BYTES = 64 * 1024  # enough for the size field of JPEG / PNG / WebP headers, EXIF included, nearly always


def select_images(cfg: SynthConfig) -> list[str]:
    """The images to process, sorted. A missing path raises ``ImageInputError`` before any work starts.

    With ``input.max_images`` (smaller than the pool) the subset is the first ``max_images`` usable
    images in seeded-hash order (:func:`usable_subset`).
    """
    if not cfg.input.paths and not cfg.input.demo_enabled:
        raise ImageInputError("input.paths is empty: give image folders, files, globs or URIs (or set input.generate_demo)")
    paths = [absolute(p) for p in cfg.input.paths]
    if cfg.input.demo_enabled:
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
        subset = usable_subset(sources, cfg.input)
        log.info("input.max_images=%d: %d usable images picked after reading %d of %d headers (rejected: %s)", limit,
                 len(subset.sources), subset.probed, len(sources), dict(subset.rejected) or "none")
        sources = subset.sources
    return sources


@dataclass
class ImageSubset:
    """The outcome of :func:`usable_subset`."""

    sources: list[str]  # sorted
    probed: int = 0  # headers read
    rejected: Counter = field(default_factory=Counter)  # drop reason -> images


def rank(sources: list[str], seed: int) -> list[str]:
    """``sources`` in seeded-hash order: depends only on (seed, path), never on the other paths."""
    return sorted(sources, key=lambda s: (stable_seed("sample", s, base_seed=seed), s))


def header_check(source: str, cfg: InputConfig) -> str | None:
    """None when the image is usable by its header (readable, not too large, every side > ``min_side``),
    else the reason stage 1 would record. Reads the first ``HEADER_BYTES`` only; the whole file
    (within ``max_bytes``) only when the header does not fit in them."""
    try:
        fs, path = filesystem(source)
        size = fs.size(path)
        if size is not None and size > cfg.max_bytes:
            return "too_large"
        with fs.open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
        try:
            width, height = probe_size(head)
        except ImageDecodeError:
            if len(head) < HEADER_BYTES:
                raise  # that was the whole file
            width, height = probe_size(read_bytes(source, cfg.max_bytes))
    except ImageDecodeError as exc:
        return exc.reason
    except FileNotFoundError:
        return "not_found"
    except (OSError, ValueError):
        return "read_error"
    if min(width, height) <= cfg.min_side:
        return "too_small"
    if width * height > cfg.max_pixels:
        return "decompression_bomb"
    return None


def usable_subset(sources: list[str], cfg: InputConfig) -> ImageSubset:
    """The first ``cfg.max_images`` usable images of ``sources`` in seeded-hash order.

    Headers are read ``cfg.probe_threads`` at a time, in rounds of at most ``cfg.probe_batch``
    candidates taken in rank order (a round never reads more than the selection can still use,
    bounded below by the thread count), so at most ``rank of the last pick + probe_batch`` headers
    are read.
    """
    n = cfg.max_images if cfg.max_images is not None else len(sources)
    order = rank(sources, cfg.sample_seed)
    out = ImageSubset([])
    picked: list[str] = []
    with ThreadPoolExecutor(max_workers=cfg.probe_threads, thread_name_prefix="header") as pool:
        pos = 0
        while len(picked) < n and pos < len(order):
            size = min(cfg.probe_batch, max(cfg.probe_threads, n - len(picked)))
            batch = order[pos:pos + size]
            pos += len(batch)
            out.probed += len(batch)
            for source, reason in zip(batch, pool.map(lambda s: header_check(s, cfg), batch)):
                if reason is not None:
                    out.rejected[reason] += 1
                elif len(picked) < n:
                    picked.append(source)  # rank order: the superset property holds
    out.sources = sorted(picked)
    return out


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
