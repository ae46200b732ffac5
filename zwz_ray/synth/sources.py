"""Stage 1's input: the image list (folders, files, globs, URIs), the demo scenes, a seeded subset."""

from __future__ import annotations

import os

from zwz_ray.images import IMAGE_EXTENSIONS, ImageInputError, list_images
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.mcq import stable_seed


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def select_images(cfg: SynthConfig) -> list[str]:
    """The images to process, sorted. A missing path raises ``ImageInputError`` before any work starts.

    With ``input.max_images`` a seeded subset is taken; the ranking depends only on
    (seed, path), so a larger ``max_images`` selects a superset of a smaller one.
    """
    if not cfg.input.paths and not cfg.input.generate_demo:
        raise ImageInputError("input.paths is empty: give image folders, files, globs or URIs (or set input.generate_demo)")
    paths = [_absolute(p) for p in cfg.input.paths]
    if cfg.input.generate_demo:
        from zwz_ray.demo import ensure_demo_images

        demo = cfg.demo
        ensure_demo_images(_absolute(demo.dir), demo.n, demo.seed, (demo.width, demo.height))
        if _absolute(demo.dir) not in paths:
            paths.append(_absolute(demo.dir))
    sources = list_images(paths)
    if not sources:
        raise ImageInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {cfg.input.paths}")
    limit = cfg.input.max_images
    if limit is not None and len(sources) > limit:
        ranked = sorted(sources, key=lambda s: stable_seed("sample", s, base_seed=cfg.input.sample_seed))
        sources = sorted(ranked[:limit])
    return sources
