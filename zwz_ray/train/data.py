"""Rows in, optimizer steps out, in an order that a resumed run reproduces exactly.

Driver side, :func:`read_rows` opens the synthesis output (or takes a Ray Dataset as is) and
:func:`ingest_config` asks Ray Data for an order-preserving split without locality hints, so the
rows a worker receives, and their order, are the same on every attempt. Worker side, each epoch
iterates the shard through a shuffle buffer seeded by ``seed + epoch``; the data position saved in
a checkpoint is the number of raw rows consumed in the current epoch, and a resumed worker skips
exactly that many rows before encoding anything.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from zwz_ray.logs import get_logger
from zwz_ray.train.examples import DROP_REASONS, REQUIRED_COLUMNS, Dropped

log = get_logger(__name__)

ITER_BATCH_ROWS = 16  # rows fetched per Ray Data batch (only affects prefetching, not the order)


# --------------------------------------------------------------------------- driver side


def read_rows(path: str) -> Any:
    """The synthesis output (parquet file or folder, local or fsspec URI) as a Ray Dataset."""
    import ray.data

    ds = ray.data.read_parquet(path)
    names = set(ds.schema().names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}: the parquet rows lack the column(s) {missing}; found {sorted(names)}")
    return ds.select_columns(list(REQUIRED_COLUMNS))


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
