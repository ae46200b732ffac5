"""Offline high-resolution demo scenes with small, labelled details.

Region-to-Image Distillation needs large images (> 1200 px per side) whose small regions hold
one clear fact each. ``generate_scenes`` draws reproducible scenes of that kind: a busy
textured background and 5-9 small details (coloured shapes, short text on signs, groups of
dots to count), listed with their boxes and answers in ``scenes.jsonl``.
``benchmark_rows`` turns scenes into benchmark questions, which
``zwz_ray.eval.writers.make_benchmark_fixture`` writes in the ZoomBench layout.

    python -m zwz_ray.demo --out demo_images --n 8
    python -m zwz_ray.eval.writers zoombench_demo.parquet --items 48
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zwz_ray import uris
from zwz_ray.images import encode_image, expand_box, micro_crop

DEFAULT_SIZE = (1600, 1280)
MANIFEST = "scenes.jsonl"
_SCENE_RE = re.compile(r"^scene_(\d{3,})\.png$")

COLOURS = {
    "red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 70, 220),
    "yellow": (245, 210, 20), "orange": (245, 130, 20), "purple": (140, 50, 180),
    "pink": (240, 100, 180), "cyan": (20, 200, 210), "brown": (130, 80, 30),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")
# Sign colours share no name with COLOURS, so "the red object" never means a sign.
SIGN_COLOURS = {
    "white": (248, 248, 244), "grey": (185, 185, 185), "pale blue": (170, 200, 240),
    "pale green": (180, 225, 170), "lavender": (205, 190, 240),
}
WORDS = ("EXIT", "CAFE", "OPEN", "PARK", "TAXI", "HOTEL", "BANK", "STOP", "SALE", "GYM",
         "42", "17", "305", "96", "B12", "7A")
COUNTS = tuple(str(n) for n in range(2, 8))
KIND_TO_TYPE = {"count": "counting", "text": "ocr", "colour": "color", "shape": "structure"}
_CAPS = {"text": 3, "count": 3, "object": len(SHAPES)}
_OUTLINE = (20, 20, 20)


# ---------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Diagonal gradient + blotchy low-frequency noise + fine grain, in muted tones."""
    c0, c1 = rng.integers(70, 190, 3), rng.integers(70, 190, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(-1, 1, 2)
    t = a * xx / w + b * yy / h
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    base = c0 * (1 - t[..., None]) + c1 * t[..., None]
    blotch = rng.integers(100, 156, (h // 40 + 2, w // 40 + 2, 3), dtype=np.uint8)
    blotch = np.asarray(Image.fromarray(blotch).resize((w, h), Image.Resampling.BICUBIC))
    grain = rng.normal(0, 4, (h, w, 3))
    arr = base + (blotch.astype(np.float32) - 128) + grain
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _muted(rng: np.random.Generator) -> tuple:
    grey = int(rng.integers(50, 200))
    return tuple(int(v) for v in np.clip(grey + rng.integers(-25, 26, 3), 0, 255))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """Many muted lines, bars and elongated outlines: nothing shaped like a detail.

    Every clutter box is at least 2.5 times longer than wide, so no clutter reads as
    a square or a circle.
    """
    for _ in range(int(rng.integers(140, 200))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        long, short = int(rng.integers(60, 400)), int(rng.integers(8, 24))
        short = min(short * int(rng.integers(1, 5)), long * 2 // 5)
        dx, dy = (long, short) if rng.random() < 0.5 else (short, long)
        kind = int(rng.integers(0, 4))
        colour, width = _muted(rng), int(rng.integers(1, 5))
        if kind == 0:
            draw.line((x, y, x + long * int(rng.choice([-1, 1])), y + int(rng.integers(0, long))),
                      fill=colour, width=width)
        elif kind == 1:
            draw.rectangle((x, y, x + dx, y + dy), outline=colour, width=width)
        elif kind == 2:
            draw.ellipse((x, y, x + dx, y + dy), outline=colour, width=width)
        else:
            draw.rectangle((x, y, x + dx, y + dy), fill=colour)


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple]:
    def ring(n, radius, phase):
        return [(cx + radius[i % len(radius)] * math.cos(phase + 2 * math.pi * i / n),
                 cy + radius[i % len(radius)] * math.sin(phase + 2 * math.pi * i / n))
                for i in range(n)]
    up = -math.pi / 2
    if shape == "triangle":
        return ring(3, [r], up)
    if shape == "star":
        return ring(10, [r, r * 0.42], up)
    if shape == "diamond":
        return ring(4, [r], up)
    if shape == "hexagon":
        return ring(6, [r], 0)
    if shape == "cross":
        a = r / 3
        return [(cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a),
                (cx + r, cy + a), (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r),
                (cx - a, cy + a), (cx - r, cy + a), (cx - r, cy - a), (cx - a, cy - a)]
    raise ValueError(shape)


def _draw_shape(draw, shape: str, colour: tuple, cx: int, cy: int, r: int) -> list[int]:
    if shape in ("circle", "square"):
        box = (cx - r, cy - r, cx + r, cy + r)
        fn = draw.ellipse if shape == "circle" else draw.rectangle
        fn(box, fill=colour, outline=_OUTLINE, width=2)
        return [cx - r, cy - r, cx + r + 1, cy + r + 1]
    points = _shape_points(shape, cx, cy, r)
    draw.polygon(points, fill=colour, outline=_OUTLINE, width=2)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [math.floor(min(xs)) - 1, math.floor(min(ys)) - 1,
            math.ceil(max(xs)) + 2, math.ceil(max(ys)) + 2]


# ---------------------------------------------------------------------------- layout


def _where(box: list[int], w: int, h: int) -> str:
    cx, cy = (box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    if row and col:
        return f"at the {row} {col}"
    if row:
        return f"at the {row}"
    return f"on the {col}" if col else "in the centre"


def _place(rng, taken: list, w: int, h: int, bw: int, bh: int, pad: int = 24):
    """Top-left corner for a bw x bh box clear of ``taken``; None if none found."""
    for _ in range(300):
        x = int(rng.integers(pad, w - bw - pad))
        y = int(rng.integers(pad, h - bh - pad))
        if all(x + bw + pad < t[0] or t[2] + pad < x or y + bh + pad < t[1] or t[3] + pad < y
               for t in taken):
            return x, y
    return None


def _detail_kinds(rng: np.random.Generator) -> list[str]:
    kinds = ["colour", "shape", "text", "count"]
    used = {"text": 1, "count": 1, "object": 2}
    target = int(rng.integers(5, 10))
    while len(kinds) < target:
        kind = str(rng.choice(["colour", "shape", "text", "count"]))
        group = "object" if kind in ("colour", "shape") else kind
        if used[group] < _CAPS[group]:
            used[group] += 1
            kinds.append(kind)
    rng.shuffle(kinds)
    return kinds


class _Pools:
    """Draws without replacement so every detail in a scene is unique."""

    def __init__(self, rng: np.random.Generator):
        self.colours = [str(c) for c in rng.permutation(list(COLOURS))]
        self.shapes = [str(s) for s in rng.permutation(list(SHAPES))]
        self.signs = [str(s) for s in rng.permutation(list(SIGN_COLOURS))]
        self.words = [str(s) for s in rng.permutation(list(WORDS))]


def _add_object(draw, rng, pools, kind, taken, w, h):
    r = int(rng.integers(18, 36))
    spot = _place(rng, taken, w, h, 2 * r + 4, 2 * r + 4)
    if spot is None:
        return None
    shape, colour = pools.shapes.pop(), pools.colours.pop()
    box = _draw_shape(draw, shape, COLOURS[colour], spot[0] + r + 2, spot[1] + r + 2, r)
    where = _where(box, w, h)
    if kind == "colour":
        question, answer = f"What colour is the {shape} {where}?", colour
    else:
        question, answer = f"What shape is the {colour} object {where}?", shape
    return {"name": f"{colour} {shape}", "box": box, "kind": kind, "answer": answer,
            "where": where, "question": question}


def _add_sign(draw, rng, pools, taken, w, h):
    font = ImageFont.load_default(size=int(rng.integers(16, 26)))
    word, sign = pools.words.pop(), pools.signs.pop()
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    pad = 7
    bw, bh = right - left + 2 * pad, bottom - top + 2 * pad
    spot = _place(rng, taken, w, h, bw, bh)
    if spot is None:
        return None
    x, y = spot
    draw.rectangle((x, y, x + bw - 1, y + bh - 1), fill=SIGN_COLOURS[sign], outline=_OUTLINE,
                   width=2)
    draw.text((x + pad - left, y + pad - top), word, fill=(10, 10, 10), font=font)
    box = [x, y, x + bw, y + bh]
    where = _where(box, w, h)
    return {"name": f"{sign} sign", "box": box, "kind": "text", "answer": word,
            "where": where, "question": f"What is written on the {sign} sign {where}?"}


def _add_dots(draw, rng, pools, taken, w, h):
    count, r = int(rng.integers(2, 8)), int(rng.integers(5, 9))
    per_row, step, pad = 4, 3 * r, 2 * r
    rows = math.ceil(count / per_row)
    bw = pad * 2 + step * (min(count, per_row) - 1) + 2 * r
    bh = pad * 2 + step * (rows - 1) + 2 * r
    spot = _place(rng, taken, w, h, bw, bh)
    if spot is None:
        return None
    colour = pools.colours.pop()
    x, y = spot
    draw.rectangle((x, y, x + bw - 1, y + bh - 1), fill=(232, 226, 212), outline=_OUTLINE)
    for i in range(count):
        cx = x + pad + r + step * (i % per_row)
        cy = y + pad + r + step * (i // per_row)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[colour], outline=_OUTLINE)
    box = [x, y, x + bw, y + bh]
    where = _where(box, w, h)
    return {"name": f"{colour} dots", "box": box, "kind": "count", "answer": str(count),
            "where": where,
            "question": f"How many {colour} dots are on the small panel {where}?"}


def render_scene(seed: int, index: int, size=DEFAULT_SIZE) -> tuple[Image.Image, list[dict]]:
    """One scene and its details; depends only on (seed, index, size)."""
    w, h = size
    rng = np.random.default_rng([seed, index])
    img = _background(rng, w, h)
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, w, h)
    pools, details, taken = _Pools(rng), [], []
    for kind in _detail_kinds(rng):
        if kind == "text":
            detail = _add_sign(draw, rng, pools, taken, w, h)
        elif kind == "count":
            detail = _add_dots(draw, rng, pools, taken, w, h)
        else:
            detail = _add_object(draw, rng, pools, kind, taken, w, h)
        if detail is not None:
            taken.append(detail["box"])
            details.append(detail)
    return img, details


# ---------------------------------------------------------------------------- files


def _remove_stale(out_dir: str, n: int) -> None:
    for name in os.listdir(out_dir):
        match = _SCENE_RE.match(name)
        if match and int(match.group(1)) >= n:
            os.remove(os.path.join(out_dir, name))


def generate_scenes(out_dir: str, n: int = 8, seed: int = 0, size=DEFAULT_SIZE,
                    progress: bool = False) -> list[str]:
    """Write ``scene_000.png``... and ``scenes.jsonl``; same arguments give the same bytes."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    os.makedirs(out_dir, exist_ok=True)
    paths, lines = [], []
    for i in range(n):
        img, details = render_scene(seed, i, size)
        name = f"scene_{i:03d}.png"
        uris.atomic_write(os.path.join(out_dir, name), encode_image(img, "PNG"))
        paths.append(os.path.join(out_dir, name))
        lines.append({"image": name, "index": i, "seed": seed, "width": img.width,
                      "height": img.height, "details": details})
        if progress:
            print(f"[{i + 1}/{n}] {paths[-1]} ({len(details)} details)", flush=True)
    _remove_stale(out_dir, n)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    uris.atomic_write(os.path.join(out_dir, MANIFEST), text)
    return paths


def load_manifest(out_dir: str) -> list[dict]:
    """The per-image entries of ``scenes.jsonl`` in ``out_dir``."""
    with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _complete(out_dir: str, n: int, seed: int, size) -> bool:
    try:
        entries = load_manifest(out_dir)
    except (OSError, ValueError):
        return False
    return len(entries) == n and all(
        e.get("seed") == seed and e.get("index") == i
        and (e.get("width"), e.get("height")) == tuple(size)
        and os.path.isfile(os.path.join(out_dir, e["image"]))
        for i, e in enumerate(entries))


def ensure_demo_images(out_dir: str, n: int = 8, seed: int = 0, size=DEFAULT_SIZE) -> list[str]:
    """Generate the demo scenes on first use only; returns the image paths."""
    if not _complete(out_dir, n, seed, size):
        return generate_scenes(out_dir, n, seed, size)
    return [os.path.join(out_dir, f"scene_{i:03d}.png") for i in range(n)]


# ---------------------------------------------------------------------------- benchmark


def _vocabulary(kind: str) -> tuple:
    return {"colour": tuple(COLOURS), "shape": SHAPES, "text": WORDS, "count": COUNTS}[kind]


def _mcq(rng, question: str, answer: str, kind: str) -> tuple[str, str]:
    wrong = [v for v in _vocabulary(kind) if v != answer]
    options = [answer] + [str(v) for v in rng.choice(wrong, 3, replace=False)]
    options = [options[i] for i in rng.permutation(4)]
    letters = "ABCD"
    lines = [f"({letters[i]}) {opt}" for i, opt in enumerate(options)]
    query = f"{question}\n" + "\n".join(lines) + "\nAnswer with the option's letter."
    return query, letters[options.index(answer)]


def benchmark_rows(n_items: int, seed: int = 0, size=DEFAULT_SIZE) -> list[dict]:
    """``n_items`` benchmark questions about scenes ``render_scene(seed, 0)``, ``(seed, 1)``, ...: rows for
    ``zwz_ray.eval.writers.write_zoombench`` (JPEG scene, PNG crop of the detail, its box, its kind)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    rng = np.random.default_rng([seed, 1_000_003])
    rows, index = [], 0
    while len(rows) < n_items:
        img, details = render_scene(seed, index, size)
        image = {"bytes": encode_image(img, "JPEG", quality=92), "path": f"scene_{index:03d}.jpg"}
        for j, d in enumerate(details[: n_items - len(rows)]):
            crop = micro_crop(img, expand_box(d["box"], 0.25, img.width, img.height))
            if len(rows) % 4 == 1:  # about 3 in 4 multiple choice, as in ZoomBench
                query, response = d["question"], d["answer"]
            else:
                query, response = _mcq(rng, d["question"], d["answer"], d["kind"])
            rows.append({"id": len(rows), "question": query, "answer": response, "image": image,
                         "crop": {"bytes": encode_image(crop, "PNG"), "path": f"scene_{index:03d}_crop_{j}.png"},
                         "category": KIND_TO_TYPE[d["kind"]], "bbox": list(d["box"])})
        index += 1
    return rows


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write offline high-resolution demo scenes.")
    p.add_argument("--out", required=True, help="folder for scene_*.png and scenes.jsonl")
    p.add_argument("--n", type=int, default=8, help="number of scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=DEFAULT_SIZE[0])
    p.add_argument("--height", type=int, default=DEFAULT_SIZE[1])
    args = p.parse_args(argv)
    size = (args.width, args.height)
    paths = generate_scenes(args.out, args.n, args.seed, size, progress=True)
    print(f"wrote {len(paths)} scenes and {os.path.join(args.out, MANIFEST)}")


if __name__ == "__main__":
    main()
