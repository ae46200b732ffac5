"""Write a benchmark file in the ZoomBench layout from plain rows.

Useful for turning your own region-annotated questions into something ``pipelines.evaluate``
reads directly, and for small test benchmarks. Rows are dicts with ``id``, ``question``,
``answer``, ``image`` (PIL image or encoded bytes) and optionally ``crop``, ``bbox``,
``category``.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from zwz_ray.images import encode_image

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ZOOMBENCH_SCHEMA = pa.schema([("id", pa.int64()), ("query", pa.string()), ("response", pa.string()), ("image", IMAGE_STRUCT),
                              ("crop_image", IMAGE_STRUCT), ("question_type", pa.string()), ("bbox", pa.list_(pa.float64()))])


def _struct(image, name: str) -> dict | None:
    if image is None:
        return None
    data = encode_image(image, "PNG") if isinstance(image, Image.Image) else bytes(image)
    return {"bytes": data, "path": name}


def write_zoombench(path: str, rows: list[dict]) -> str:
    """Write ``rows`` as a ZoomBench-layout parquet file (id, query, response, image, crop_image, question_type, bbox)."""
    records = [{"id": int(r["id"]), "query": r["question"], "response": str(r["answer"]),
                "image": _struct(r["image"], f"{r['id']}.png"), "crop_image": _struct(r.get("crop"), f"{r['id']}_crop.png"),
                "question_type": r.get("category"), "bbox": [float(v) for v in r["bbox"]] if r.get("bbox") else None}
               for r in rows]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(pa.Table.from_pylist(records, schema=ZOOMBENCH_SCHEMA), tmp)
    os.replace(tmp, path)
    return path
