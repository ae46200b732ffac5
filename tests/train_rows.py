"""Training rows held in memory, for tests and benchmarks that run the distillation loop in-process.

``benchmarks/bench_train.py`` imports this module too (it puts tests/ on ``sys.path``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator


class ListRows:
    """A :class:`zwz_ray.train.data.RowSource` over a list, with a seeded per-epoch shuffle."""

    def __init__(self, rows: Iterable[dict], shuffle: bool, seed: int):
        self.data, self.shuffle, self.seed = list(rows), shuffle, seed

    def rows(self, epoch: int) -> Iterator[dict]:
        order = list(range(len(self.data)))
        if self.shuffle:
            random.Random(self.seed + epoch).shuffle(order)
        return (self.data[i] for i in order)
