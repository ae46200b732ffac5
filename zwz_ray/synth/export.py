"""Export a synthesis output folder as parquet rows other trainers read: EasyR1's or verl's layout.

    python -m zwz_ray.synth.export --layout easyr1 outputs/synth train.parquet
    python -m zwz_ray.synth.export --layout verl s3://bucket/zwz/synth/run1 s3://bucket/zwz/verl/train.parquet

Layouts (one row per kept item; the red-box overlay image travels inside the file as PNG bytes):

* ``easyr1`` (the released training set, inclusionAI/ZwZ-RL-VQA, and EasyR1's ``data.prompt_key: problem``,
  ``answer_key: answer``, ``image_key: images``): ``images`` a list with the overlay as
  ``{bytes, path}``, ``problem`` the MCQ text with the image placeholder in front (EasyR1 splits the prompt
  at ``<image>`` to place the image; ``--placeholder ""`` leaves it out), ``answer`` the letter.
* ``verl`` (verl's ``RLHFDataset`` and its reward manager): ``data_source``, ``prompt`` as chat messages
  (one user turn, placeholder + problem), ``images``, ``ability``, ``reward_model`` ``{style: rule,
  ground_truth: letter}``, ``extra_info`` ``{split, index, id, answer_text, options}``.

Only committed chunks are read (the manifest's), so exporting while a run is going on, or after one
was killed, never picks up half-written rows. The destination is written to a staging name and
moved into place at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from zwz_ray.synth.store import OutputStore
from zwz_ray.uris import filesystem

LAYOUTS = ("easyr1", "verl")
IMAGE_PLACEHOLDER = "<image>"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the Hugging Face image struct

EASYR1_SCHEMA = pa.schema([("images", pa.list_(IMAGE)), ("problem", pa.string()), ("answer", pa.string())])
VERL_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("images", pa.list_(IMAGE)),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
    ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("id", pa.string()),
                              ("answer_text", pa.string()), ("options", pa.list_(pa.string()))])),
])
SCHEMAS = {"easyr1": EASYR1_SCHEMA, "verl": VERL_SCHEMA}
NEEDED = ("id", "image", "problem", "answer", "answer_text", "options")


class ExportError(ValueError):
    """The output folder holds nothing to export, or a row cannot be exported."""


@dataclass
class ExportResult:
    layout: str
    dest: str
    rows: int
    chunks: int


def kept_files(out_dir: str) -> list[str]:
    """The kept-row files of the committed chunks of ``out_dir``, in commit order."""
    store = OutputStore(out_dir)
    entries = store.entries()
    if not entries:
        raise ExportError(f"{out_dir} has no committed chunk (no {store.path('manifest.jsonl')}): run synthesis first")
    files = [store.path("kept", f"{e['chunk']}.parquet") for e in entries]
    return [f for f in files if store.fs.exists(f)]  # a chunk whose images all dropped has no kept file


def _tables(out_dir: str) -> Iterator[pa.Table]:
    fs, _ = filesystem(out_dir)
    for path in kept_files(out_dir):
        with fs.open(path, "rb") as fh:
            table = pq.read_table(fh, columns=list(NEEDED))
        if table.num_rows:
            yield table


def _prompt_text(problem: str, placeholder: str) -> str:
    return f"{placeholder}{problem}" if placeholder and placeholder not in problem else problem


def _check(row: dict) -> None:
    missing = [k for k in ("image", "problem", "answer") if not row.get(k)]
    if missing:
        raise ExportError(f"kept row {row.get('id')!r} has no {', '.join(missing)}")


def convert(table: pa.Table, layout: str, *, placeholder: str = IMAGE_PLACEHOLDER, data_source: str = "zwz_r2i",
            ability: str = "perception", split: str = "train", start_index: int = 0) -> pa.Table:
    """Kept rows (``OUTPUT_COLUMNS``) -> one ``layout`` table (:data:`SCHEMAS`)."""
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    out = []
    for i, row in enumerate(table.select(list(NEEDED)).to_pylist(), start=start_index):
        _check(row)
        images = [{"bytes": row["image"], "path": None}]
        text = _prompt_text(row["problem"], placeholder)
        if layout == "easyr1":
            out.append({"images": images, "problem": text, "answer": row["answer"]})
        else:
            out.append({"data_source": data_source, "prompt": [{"role": "user", "content": text}], "images": images,
                        "ability": ability, "reward_model": {"style": "rule", "ground_truth": row["answer"]},
                        "extra_info": {"split": split, "index": i, "id": row["id"], "answer_text": row["answer_text"],
                                       "options": row["options"]}})
    return pa.Table.from_pylist(out, schema=SCHEMAS[layout])


def export(out_dir: str, dest: str, layout: str = "easyr1", **options) -> ExportResult:
    """Write every kept row of the synthesis folder ``out_dir`` to the parquet file ``dest`` in ``layout``.

    ``options`` go to :func:`convert` (``placeholder``, ``data_source``, ``ability``, ``split``).
    """
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    fs, path = filesystem(dest)
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.makedirs(parent, exist_ok=True)
    staging = f"{path}.partial"
    rows = chunks = 0
    with fs.open(staging, "wb") as fh, pq.ParquetWriter(fh, SCHEMAS[layout]) as writer:
        for table in _tables(out_dir):
            writer.write_table(convert(table, layout, start_index=rows, **options))
            rows, chunks = rows + table.num_rows, chunks + 1
    if rows == 0:
        fs.rm(staging)
        raise ExportError(f"{out_dir} holds no kept rows to export")
    fs.mv(staging, path)
    return ExportResult(layout, dest, rows, chunks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zwz_ray.synth.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=LAYOUTS, default="easyr1", help="easyr1 (the released training set's) or verl")
    parser.add_argument("--placeholder", default=IMAGE_PLACEHOLDER, help='put before the problem text ("" for none)')
    parser.add_argument("--data-source", default="zwz_r2i", help="verl: the data_source column (picks the reward function)")
    parser.add_argument("--ability", default="perception", help="verl: the ability column")
    parser.add_argument("--split", default="train", help="verl: extra_info.split")
    parser.add_argument("out_dir", help="a synthesis output.dir (local path or fsspec URI)")
    parser.add_argument("dest", help="the parquet file to write (local path or fsspec URI)")
    args = parser.parse_args(argv)
    options = {"placeholder": args.placeholder}
    if args.layout == "verl":
        options.update(data_source=args.data_source, ability=args.ability, split=args.split)
    try:
        result = export(args.out_dir, args.dest, args.layout, **options)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(vars(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
