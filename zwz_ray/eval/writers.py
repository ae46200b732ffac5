"""Write a benchmark file in the ZoomBench layout from plain rows: the one writer of that layout.

Useful for turning your own region-annotated questions into something ``pipelines.evaluate``
reads directly, and for small test benchmarks; the offline demo benchmark
(:func:`make_benchmark_fixture`) is written by it too. Rows are dicts with ``id``, ``question``,
``answer``, ``image`` and optionally ``crop``, ``bbox``, ``category``. An image is a PIL image
(stored as PNG), encoded bytes, or a ``{"bytes", "path"}`` struct kept as given.

    python -m zwz_ray.eval.writers zoombench_demo.parquet --items 48    # the demo benchmark
"""

from __future__ import annotations

import argparse
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from zwz_ray import uris
from zwz_ray.demo import DEFAULT_SIZE, benchmark_rows
from zwz_ray.images import encode_image

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ZOOMBENCH_SCHEMA = pa.schema([("id", pa.int64()), ("query", pa.string()), ("response", pa.string()), ("image", IMAGE_STRUCT),
                              ("crop_image", IMAGE_STRUCT), ("question_type", pa.string()), ("bbox", pa.list_(pa.float64()))])


def _hf_features() -> str:
    """The Hugging Face ``datasets`` features of the layout, so ``load_dataset`` decodes the images."""
    value = lambda dtype: {"dtype": dtype, "_type": "Value"}  # noqa: E731
    features = {"id": value("int64"), "query": value("string"), "response": value("string"),
                "image": {"_type": "Image"}, "crop_image": {"_type": "Image"},
                "question_type": value("string"),
                "bbox": {"feature": value("float64"), "_type": "Sequence"}}
    return json.dumps({"info": {"features": features}})


def _struct(image, name: str) -> dict | None:
    if image is None:
        return None
    if isinstance(image, dict):
        return {"bytes": bytes(image["bytes"]), "path": image.get("path") or name}
    data = encode_image(image, "PNG") if isinstance(image, Image.Image) else bytes(image)
    return {"bytes": data, "path": name}


def write_zoombench(path: str, rows: list[dict]) -> str:
    """Write ``rows`` as a ZoomBench-layout parquet file (id, query, response, image, crop_image, question_type,
    bbox) at ``path``, a local path or URI, in one step (``zwz_ray.uris.atomic_write``)."""
    records = [{"id": int(r["id"]), "query": r["question"], "response": str(r["answer"]),
                "image": _struct(r["image"], f"{r['id']}.png"), "crop_image": _struct(r.get("crop"), f"{r['id']}_crop.png"),
                "question_type": r.get("category"), "bbox": [float(v) for v in r["bbox"]] if r.get("bbox") else None}
               for r in rows]
    schema = ZOOMBENCH_SCHEMA.with_metadata({"huggingface": _hf_features()})
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records, schema=schema), buffer)
    uris.atomic_write(path, buffer.getvalue())
    return path


def make_benchmark_fixture(path: str, n_items: int = 24, seed: int = 0, size=DEFAULT_SIZE) -> str:
    """Write the offline demo benchmark: ``n_items`` questions about generated scenes (``zwz_ray.demo``)."""
    return write_zoombench(path, benchmark_rows(n_items, seed, size))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the offline demo benchmark in the ZoomBench layout.")
    p.add_argument("path", help="the parquet file to write (a local path or URI)")
    p.add_argument("--items", type=int, default=48, help="questions in the benchmark file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=DEFAULT_SIZE[0])
    p.add_argument("--height", type=int, default=DEFAULT_SIZE[1])
    args = p.parse_args(argv)
    make_benchmark_fixture(args.path, args.items, args.seed, (args.width, args.height))
    print(f"wrote {args.items} benchmark items to {args.path}")


if __name__ == "__main__":
    main()
