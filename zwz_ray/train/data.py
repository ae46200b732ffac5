"""Rows in, optimizer steps out, in an order that a resumed run reproduces exactly.

Driver side, before Ray starts, :func:`locate_rows` finds and counts the rows of ``data.path`` (a synthesis
output folder, its ``kept/`` folder, plain parquet, or the EasyR1 layout of the released training set);
:func:`read_rows` opens them as a Ray Dataset (a given Ray Dataset is taken as is) and
:func:`ingest_config` asks Ray Data for an order-preserving split without locality hints, so the
rows a worker receives, and their order, are the same on every attempt. Worker side, each epoch
iterates the shard through a shuffle buffer seeded by ``seed + epoch``; the data position saved in
a checkpoint is the number of raw rows consumed in the current epoch, and a resumed worker skips
exactly that many rows before encoding anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from zwz_ray import uris
from zwz_ray.config import ConfigError
from zwz_ray.images import ImageDecodeError, read_bytes
from zwz_ray.logs import get_logger
from zwz_ray.synth.store import MANIFEST, OutputStore
from zwz_ray.train.examples import DROP_REASONS, REQUIRED_COLUMNS, Dropped

log = get_logger(__name__)

ITER_BATCH_ROWS = 16  # rows fetched per Ray Data batch (only affects prefetching, not the order)
TRAIN_SCHEMA = pa.schema([("id", pa.string()), ("image", pa.binary()), ("problem", pa.string()), ("answer", pa.string())])


# --------------------------------------------------------------------------- driver side

EASYR1_COLUMNS = ("images", "problem", "answer")  # the released training set (inclusionAI/ZwZ-RL-VQA), EasyR1's layout
IMAGE_PLACEHOLDER = "<image>"


@dataclass
class RowFiles:
    """Where the training rows are: parquet files of one layout, found and counted before Ray starts."""

    path: str  # data.path as given
    kind: str  # "synthesis output", "kept folder" or "parquet"
    layout: str  # "synthesis" (id, image, problem, answer) or "easyr1" (images list, problem, answer)
    files: list[str] = field(default_factory=list)
    num_rows: int = 0


def locate_rows(path: str, key: str = "data.path") -> RowFiles:
    """The parquet files of ``path``: a synthesis output folder (its committed kept files, via the manifest), its
    ``kept/`` folder (same), a parquet file, or a folder of them. ``drops/`` files are never rows. Raises
    ConfigError for a path that does not exist, holds no parquet, or whose columns fit no known layout."""
    fs, inner = uris.filesystem(path)
    if not fs.exists(inner):
        raise ConfigError(f"{key}: {path!r} does not exist (give a synthesis output folder, its kept/ folder or parquet rows)")
    if fs.isfile(inner):
        kind, files = "parquet", [inner]
    elif fs.exists(f"{inner.rstrip('/')}/{MANIFEST}"):
        kind, files = "synthesis output", _committed_kept(path)
    elif inner.rstrip("/").endswith("/kept") and fs.exists(f"{inner.rstrip('/').rsplit('/', 1)[0]}/{MANIFEST}"):
        kind, files = "kept folder", _committed_kept(uris.display(fs, inner.rstrip("/").rsplit("/", 1)[0], like=path))
    else:
        kind = "parquet"
        files = sorted(f for f in fs.find(inner) if f.endswith(".parquet") and not _skipped(f[len(inner.rstrip("/")):]))
    if not files:
        raise ConfigError(f"{key}: {path!r} ({kind}) holds no rows" + (" (see its stats.json)" if kind != "parquet" else ""))
    rows = RowFiles(path, kind, "", [uris.display(fs, f, like=path) for f in files])
    for file, shown in zip(files, rows.files):
        try:
            with fs.open(file, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
        except (OSError, pa.ArrowException) as exc:
            raise ConfigError(f"{key}: {shown} is not a readable parquet file: {exc}") from None
        layout = _layout(set(meta.schema.to_arrow_schema().names))
        if layout is None:
            names = sorted(meta.schema.to_arrow_schema().names)
            raise ConfigError(f"{key}: {shown} has the columns {names}; training rows need {list(REQUIRED_COLUMNS)} "
                              f"(synthesis) or {list(EASYR1_COLUMNS)} (EasyR1 / ZwZ-RL-VQA)")
        if rows.layout and layout != rows.layout:
            raise ConfigError(f"{key}: {path!r} mixes the {rows.layout} and {layout} layouts; point it at one of them")
        rows.layout, rows.num_rows = layout, rows.num_rows + meta.num_rows
    return rows


def _committed_kept(output_dir: str) -> list[str]:
    """Kept files of the chunks a synthesis run committed (a chunk that kept nothing has none)."""
    store = OutputStore(output_dir)
    files = [store.path("kept", f"{entry['chunk']}.parquet") for entry in store.entries()]
    return [f for f in files if store.fs.exists(f)]


def _skipped(relative: str) -> bool:
    """drops/, staging and hidden or underscore files (``_SUCCESS``, ``.parts``) are never training rows."""
    parts = [p for p in relative.split("/") if p]
    return any(p == "drops" or p.startswith(("_", ".")) for p in parts)


def _layout(names: set[str]) -> str | None:
    if set(REQUIRED_COLUMNS) <= names:
        return "synthesis"
    if set(EASYR1_COLUMNS) <= names:
        return "easyr1"
    return None


def read_rows(rows: RowFiles) -> Any:
    """The rows as a Ray Dataset of the training columns (EasyR1 rows converted on the fly)."""
    import ray.data
    from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

    fs, _ = uris.filesystem(rows.files[0])
    local = "file" in fs.protocol or "local" in fs.protocol
    paths = [uris.filesystem(f)[1] for f in rows.files]
    kwargs = {"filesystem": LocalFileSystem() if local else PyFileSystem(FSSpecHandler(fs))}
    if rows.layout == "synthesis":
        return ray.data.read_parquet(paths, columns=list(REQUIRED_COLUMNS), **kwargs)
    names = ["images", "problem", "answer", *(["id"] if "id" in _names(rows.files[0]) else [])]
    ds = ray.data.read_parquet(paths, columns=names, include_paths=True, **kwargs)
    base = None if local else fs
    return ds.map_batches(easyr1_rows, batch_format="pyarrow", fn_kwargs={"fs": base})


def _names(path: str) -> list[str]:
    fs, inner = uris.filesystem(path)
    with fs.open(inner, "rb") as fh:
        return pq.ParquetFile(fh).schema_arrow.names


def easyr1_rows(batch: pa.Table, fs: Any = None) -> pa.Table:
    """EasyR1 rows -> training rows: the first of ``images`` (the red-box overlay; bytes, an {bytes, path}
    struct or a path relative to its parquet file), ``problem`` without its ``<image>`` placeholder."""
    out = []
    for row in batch.to_pylist():
        problem = (row.get("problem") or "").replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "").strip()
        answer = str(row.get("answer") or "").strip()
        images = row.get("images") or []
        image = _image_value(images[0], row["path"], fs) if len(images) else None
        rid = row.get("id")
        if rid is None:  # the released set has no id column: a stable one from what the row says
            rid = hashlib.sha1(f"{row['path']}|{problem}|{answer}".encode()).hexdigest()[:12]
        out.append({"id": str(rid), "image": image, "problem": problem, "answer": answer})
    return pa.Table.from_pylist(out, schema=TRAIN_SCHEMA)


def _image_value(value: Any, parquet_path: str, fs: Any) -> Any:
    """Encoded bytes of one image value; None for a path that cannot be read (the encoder drops it as missing_image)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)) or value is None:
        return value
    target = str(value)
    if not uris.is_remote(target) and not os.path.isabs(target):
        target = "/".join([parquet_path.rsplit("/", 1)[0], target]) if "/" in parquet_path else target
    if fs is not None and not uris.is_remote(target):
        target = fs.unstrip_protocol(target)
    try:
        return read_bytes(target)
    except ImageDecodeError as exc:
        log.warning("image %s of %s cannot be read: %s", value, parquet_path, exc)
        return None


def ingest_config() -> Any:
    """Ray Train's DataConfig for a deterministic split: preserve order, no locality hints."""
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    return DataConfig(execution_options=ExecutionOptions(preserve_order=True), enable_shard_locality=False)


# --------------------------------------------------------------------------- worker side


class RowSource(Protocol):
    def rows(self, epoch: int) -> Iterator[dict]:
        """The rows of one epoch, in a deterministic order."""


class ShardRows:
    """A worker's Ray Data shard (``ray.train.get_dataset_shard``) with a seeded per-epoch shuffle."""

    def __init__(self, shard: Any, shuffle_buffer: int, seed: int):
        self.shard, self.shuffle_buffer, self.seed = shard, shuffle_buffer, seed

    def rows(self, epoch: int) -> Iterator[dict]:
        kwargs: dict[str, Any] = {"batch_size": ITER_BATCH_ROWS, "batch_format": "pyarrow"}
        if self.shuffle_buffer > 0:
            kwargs.update(local_shuffle_buffer_size=self.shuffle_buffer, local_shuffle_seed=self.seed + epoch)
        for table in self.shard.iter_batches(**kwargs):
            yield from table.to_pylist()


class StepBatches:
    """Encodes rows and groups them into ``grad_accum`` micro batches of ``micro_batch_size``.

    ``rows_consumed`` counts raw rows (kept or dropped) taken from the current epoch; ``drops``
    counts skipped rows by reason (in the first epoch; later epochs repeat the same rows).
    Both go into checkpoints.
    """

    def __init__(self, source: RowSource, encode: Callable[[dict], Any], collate: Callable[[list], dict],
                 micro_batch_size: int, grad_accum: int):
        self.source, self.encode, self.collate = source, encode, collate
        self.micro_batch_size, self.grad_accum = micro_batch_size, grad_accum
        self.drops: Counter = Counter()
        self.rows_consumed = 0
        self.epoch: int | None = None
        self._rows: Iterator[dict] | None = None

    def start_epoch(self, epoch: int, skip_rows: int = 0) -> None:
        """Begin ``epoch``, skipping the ``skip_rows`` raw rows a previous attempt already used."""
        self._rows = self.source.rows(epoch)
        self.epoch, self.rows_consumed = epoch, 0
        for _ in range(skip_rows):
            if next(self._rows, None) is None:
                break
            self.rows_consumed += 1

    def next_step(self) -> list[dict] | None:
        """The micro batches of the next optimizer step, or None when this epoch has too few rows left."""
        need = self.micro_batch_size * self.grad_accum
        examples = []
        while len(examples) < need:
            example = self._next_example()
            if example is None:
                return None
            examples.append(example)
        size = self.micro_batch_size
        return [self.collate(examples[i:i + size]) for i in range(0, need, size)]

    def _next_example(self) -> Any:
        assert self._rows is not None, "start_epoch() first"
        for row in self._rows:
            self.rows_consumed += 1
            try:
                return self.encode(row)
            except Dropped as drop:
                first = drop.reason not in self.drops
                if self.epoch == 0:  # later epochs see the same rows again: count each row once
                    self.drops[drop.reason] += 1
                log.log(logging.WARNING if first else logging.DEBUG, "dropped row %s: %s%s", row.get("id"), drop,
                        " (further drops of this kind are logged at DEBUG)" if first else "")
        return None

    def drop_vector(self) -> list[int]:
        return [self.drops.get(r, 0) for r in DROP_REASONS]
