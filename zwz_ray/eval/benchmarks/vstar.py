"""V* Bench: 191 questions, 115 direct attributes + 76 relative positions, letter accuracy per category.

Published two ways (both read by the one preset):
* craigwu/vstar_bench: folders ``direct_attributes/`` and ``relative_position/`` of ``NAME.jpg`` +
  ``NAME.json`` (``question``, ``options`` with the correct option first, ``target_object``,
  ``bbox`` as x, y, w, h). The options are shown in an order fixed per question (seeded by its
  name), so the right letter is not always A.
* lmms-lab/vstar-bench parquet: ``question_id, image, text, label, category`` (options inside
  ``text``, the letter in ``label``), as lmms-eval's vstar_bench task reads it.
"""

from __future__ import annotations

import json
import random
import zlib

from fsspec.core import url_to_fs

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, as_list, letter, need, plain_score, with_options
from zwz_ray.eval.loaders import BenchmarkError

CATEGORIES = {"direct_attributes": "attribute", "relative_position": "spatial"}


def _folders(path: str) -> list[tuple[str, dict]] | None:
    fs, local = url_to_fs(path)
    if not fs.isdir(local) or not any(fs.isdir(f"{local.rstrip('/')}/{d}") for d in CATEGORIES):
        return None
    pairs = []
    for folder in CATEGORIES:
        for f in sorted(fs.glob(f"{local.rstrip('/')}/{folder}/*.json")):
            try:
                with fs.open(f, "r", encoding="utf-8") as fh:
                    row = json.load(fh)
            except (OSError, ValueError) as exc:
                raise BenchmarkError(f"{f}: not a V* question file ({type(exc).__name__}: {exc})") from None
            if not isinstance(row, dict):
                raise BenchmarkError(f"{f}: expected one JSON object per question")
            stem = f.rsplit("/", 1)[-1][: -len(".json")]
            pairs.append((f, {**row, "__folder__": folder, "__name__": stem}))
    return pairs


def _union_xyxy(boxes: list) -> list[float] | None:
    try:
        xywh = [[float(v) for v in b] for b in boxes]
    except (TypeError, ValueError):
        raise LayoutError("bbox", f"is {boxes!r:.60}, not a list of [x, y, w, h] boxes") from None
    if not xywh or any(len(b) != 4 for b in xywh):
        return None
    return [min(b[0] for b in xywh), min(b[1] for b in xywh), max(b[0] + b[2] for b in xywh), max(b[1] + b[3] for b in xywh)]


def _convert(row: dict) -> list[dict]:
    if "__folder__" in row:
        folder, name = row["__folder__"], row["__name__"]
        options = [str(o) for o in as_list(need(row, "options", list))]
        if len(options) < 2:
            raise LayoutError("options", f"has {len(options)} option(s); V* questions have 2 or 4")
        order = list(range(len(options)))
        random.Random(zlib.crc32(name.encode())).shuffle(order)
        shown = [options[i] for i in order]
        boxes = row.get("bbox")
        return [{"id": f"{folder}/{name}", "question": with_options(need(row, "question"), shown),
                 "answer": chr(65 + order.index(0)), "image": f"{folder}/{name}.jpg", "options": shown,
                 "bbox": _union_xyxy(boxes) if isinstance(boxes, list) and boxes and isinstance(boxes[0], list) else None,
                 "category": CATEGORIES[folder]}]
    category = str(need(row, "category"))
    return [{"id": str(need(row, "question_id", (str, int))), "question": need(row, "text"),
             "answer": letter(row.get("label"), "label", "ABCD"), "image": row.get("image"),
             "category": CATEGORIES.get(category, category)}]


PRESETS = [
    Preset("vstar", "V*", "hf://datasets/craigwu/vstar_bench", ("question_id", "image", "text", "label", "category"), _convert,
           lambda df: plain_score(df, "category"), "craigwu/vstar_bench folders; lmms-eval vstar_bench (lmms-lab/vstar-bench)",
           files=("**/*.parquet",), reader=_folders),
]
