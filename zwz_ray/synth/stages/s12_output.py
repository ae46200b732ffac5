"""Stage 12, output rows: the stable id and the provenance of every kept row.

Stateless: Ray Data runs it as many small tasks.
"""

from __future__ import annotations

import hashlib
import json

from zwz_ray.synth.stages.base import QUESTION, Stage


def item_id(source: str, bbox: list, question: str) -> str:
    """Stable row id: a hash of the source image, the box and the question."""
    text = json.dumps([source, [int(v) for v in bbox], question.strip()], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


class OutputRows(Stage):
    """Stage 12: the id and the provenance of every kept row."""

    name = "output"
    reads = ("source", "bbox", "question", "problem", "answer")
    writes = ("id", "provenance")
    level_in = level_out = QUESTION

    def __init__(self, provenance: dict, **kw):
        super().__init__(**kw)
        self.provenance = provenance

    def process(self, rows: list[dict]) -> list[list[dict]]:
        for row in rows:
            row["id"] = item_id(row["source"], row["bbox"], row["question"])
            row["provenance"] = json.dumps({**self.provenance, "object_index": row["object_index"],
                                            "question_index": row["question_index"]}, sort_keys=True)
        return [[row] for row in rows]
