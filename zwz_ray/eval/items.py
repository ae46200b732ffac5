"""Benchmark rows -> evaluation items -> (item, view) rows.

:func:`normalize_items` turns a batch of raw rows (any supported layout) into items with fixed
columns; :func:`explode_views` turns items into one row per (item, view) to answer. Both are
pure batch functions used inside Ray Data ``map_batches`` and in plain loops alike.

A row whose image cannot be read is kept, with ``image_error`` set: the model is not asked,
and the prediction is recorded with the rule ``error`` (never a silent loss).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import numpy as np
import pandas as pd

from zwz_ray.images import ImageDecodeError, probe_size, read_bytes
from zwz_ray.replies import detect_mcq, parse_options
from zwz_ray.uris import absolute

ITEM_COLUMNS = ["id", "question", "answer", "image", "image_error", "image_size", "crop", "crop_error", "bbox", "category",
                "options", "is_mcq"]
VIEW_COLUMNS = ["id", "view", "question", "answer", "image", "image_error", "image_size", "bbox", "category", "options", "is_mcq"]
OPTION_LETTER_COLUMNS = ("A", "B", "C", "D", "E", "F")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


# --------------------------------------------------------------------------- values


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _maybe_base64(text: str) -> bytes | None:
    if text.startswith("data:image") and "," in text:
        text = text.split(",", 1)[1]
    elif len(text) < 256 or not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def image_bytes(value: Any, base_dir: str) -> tuple[bytes | None, str | None]:
    """(encoded image bytes, error) from bytes, a {bytes, path} struct, a path or base64 text."""
    if isinstance(value, dict):
        if not _missing(value.get("bytes")):
            return bytes(value["bytes"]), None
        value = value.get("path")
    if _missing(value):
        return None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, str):
        inline = _maybe_base64(value.strip())
        if inline is not None:
            return inline, None
        try:
            return read_bytes(absolute(value.strip(), base_dir or None)), None
        except ImageDecodeError as exc:
            return None, f"{exc.reason}: {exc.detail or value}"
    return None, f"unsupported image value of type {type(value).__name__}"


def bbox_xyxy(value: Any, fmt: str = "xyxy") -> list[float] | None:
    """Four numbers (list, array or JSON text) as an (x1, y1, x2, y2) pixel box; None if absent or malformed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if value is None or isinstance(value, float):
        return None
    try:
        box = [float(v) for v in list(value)]
    except (TypeError, ValueError):
        return None
    if len(box) != 4 or not all(np.isfinite(box)):
        return None
    if fmt == "xywh":
        box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
    return box if box[2] > box[0] and box[3] > box[1] else None


def option_list(value: Any) -> list[str] | None:
    """Options given as a list, a JSON list, or "A. x / B. y" text."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value] or None
    if _missing(value):
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
            value = parsed if isinstance(parsed, list) else value
        except ValueError:
            pass
    if isinstance(value, str):
        found = parse_options(value)
        return list(found.values()) or None
    return [str(v) for v in value]


def _text(value: Any) -> str:
    if _missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# --------------------------------------------------------------------------- batches


def _size(data: bytes | None) -> list[int] | None:
    if data is None:
        return None
    try:
        return list(probe_size(data))
    except ImageDecodeError:
        return None


def _one_item(row: dict, columns: dict[str, str], base_dir: str, bbox_format: str, index: int) -> dict:
    get = lambda field: row.get(columns[field]) if field in columns else None  # noqa: E731
    image, image_error = image_bytes(get("image"), base_dir)
    if image is None and image_error is None:
        image_error = f"no image in column {columns.get('image')!r}"
    crop, crop_error = image_bytes(get("crop"), base_dir) if "crop" in columns else (None, None)
    question, answer = _text(get("question")), _text(get("answer"))
    options = option_list(get("options")) if "options" in columns else None
    if options is None and all(c in row for c in OPTION_LETTER_COLUMNS[:2]):
        options = [_text(row[c]) for c in OPTION_LETTER_COLUMNS if c in row and not _missing(row[c])] or None
    is_mcq, parsed = detect_mcq(question, answer, options)
    category = _text(get("category")) or None
    return {
        "id": _text(get("id")) if "id" in columns else str(index),
        "question": question,
        "answer": answer,
        "image": image,
        "image_error": image_error,
        "image_size": _size(image),
        "crop": crop,
        "crop_error": crop_error,
        "bbox": bbox_xyxy(get("bbox"), bbox_format),
        "category": category,
        "options": list(parsed.values()) or None,
        "is_mcq": bool(is_mcq),
    }


def normalize_items(batch: pd.DataFrame, columns: dict[str, str], base_dir: str = "", bbox_format: str = "xyxy",
                    start_index: int = 0) -> pd.DataFrame:
    """Raw benchmark rows -> items (:data:`ITEM_COLUMNS`). ``columns`` maps fields to raw column names."""
    records = batch.to_dict("records")
    items = [_one_item(r, columns, base_dir, bbox_format, start_index + i) for i, r in enumerate(records)]
    return pd.DataFrame(items, columns=ITEM_COLUMNS)


def view_key(item_id: str, view: str) -> str:
    return f"{item_id}\x1f{view}"


def explode_views(items: pd.DataFrame, views: list[str], done: frozenset[str] | set[str] = frozenset()) -> pd.DataFrame:
    """One row per (item, view): the global view on the full image, the regional view on the crop.

    Pairs in ``done`` (answered in an earlier run) come out with ``done=True`` and no image, so
    the driver still learns the benchmark's keys without the model seeing them again.
    """
    rows = []
    for item in items.to_dict("records"):
        for view in views:
            if view == "regional" and item["crop"] is None and not item["crop_error"]:
                continue
            row = {k: item[k] for k in VIEW_COLUMNS if k in item}
            row.update(view=view, done=view_key(item["id"], view) in done)
            if row["done"]:  # answered in an earlier run: passes through without its image
                row.update(image=None, image_size=None)
            elif view == "regional":
                row.update(image=item["crop"], image_error=item["crop_error"], image_size=_size(item["crop"]), bbox=None)
            rows.append(row)
    return pd.DataFrame(rows, columns=VIEW_COLUMNS + ["done"])
