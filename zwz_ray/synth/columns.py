"""The row layout that flows through every synthesis stage.

Every stage returns tables with :data:`ROW_SCHEMA` (all columns, nulls where a value is not
known yet), so blocks from different stages and batches always concatenate. Rows fan out as
the paper's units get finer: an image row (``object_index == -1``) becomes object rows, an
object row (``question_index == -1``) becomes question rows.

A dropped row is not removed: it keeps ``drop_stage`` / ``drop_reason`` / ``drop_detail`` and
later stages pass it through untouched, so the final rows split into kept rows and drops.
``usage`` (JSON) carries model calls, tokens and busy time; see ``accounting``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

ROW_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("image_width", pa.int32()),
        ("image_height", pa.int32()),
        ("object_index", pa.int32()),
        ("n_objects", pa.int32()),  # how many object rows the image fanned out to
        ("object_name", pa.string()),
        ("grounding_box", pa.list_(pa.float64())),  # as the grounder returned it, unclamped
        ("grounding_score", pa.float64()),
        ("bbox", pa.list_(pa.int32())),  # clamped pixel box, un-expanded
        ("crop", pa.binary()),
        ("question_index", pa.int32()),
        ("n_questions", pa.int32()),  # how many question rows the object fanned out to
        ("question", pa.string()),
        ("question_type", pa.string()),
        ("validation_reason", pa.string()),
        ("teacher_answers", pa.list_(pa.string())),
        ("answer_text", pa.string()),
        ("consistency", pa.float64()),
        ("consensus_by", pa.string()),
        ("image", pa.binary()),  # the overlay: full image with the red box
        ("overlay_question", pa.string()),
        ("distractors", pa.list_(pa.string())),  # the teacher's wrong options, before cleaning
        ("problem", pa.string()),
        ("answer", pa.string()),
        ("options", pa.list_(pa.string())),
        ("difficulty_correct", pa.int32()),
        ("difficulty_checked", pa.bool_()),  # false: the student call failed and difficulty.on_error kept the row
        ("id", pa.string()),
        ("provenance", pa.string()),
        ("drop_stage", pa.string()),
        ("drop_reason", pa.string()),
        ("drop_detail", pa.string()),
        ("drop_retryable", pa.bool_()),  # the drop came from the infrastructure: a rerun tries the image again
        ("usage", pa.string()),
    ]
)
ALL_COLUMNS = tuple(ROW_SCHEMA.names)

# What output.dir/kept holds (the trainer reads image, problem, answer).
OUTPUT_COLUMNS = (
    "id", "image", "problem", "answer", "answer_text", "options", "bbox", "source_image", "image_width",
    "image_height", "crop", "question", "question_type", "object_name", "teacher_answers", "consistency",
    "validation_reason", "difficulty_correct", "difficulty_checked", "provenance",
)
# What output.dir/drops holds: where and why, plus enough context to look the item up.
DROP_COLUMNS = ("source", "stage", "reason", "detail", "retryable", "attempt", "object_index", "object_name", "question_index",
                "question")
# Small columns the driver collects to compute statistics.
SMALL_COLUMNS = ("source", "object_index", "n_objects", "object_name", "question_index", "n_questions", "question",
                 "drop_stage", "drop_reason", "drop_detail", "drop_retryable", "usage")
SMALL_SCHEMA = pa.schema([ROW_SCHEMA.field(name) for name in SMALL_COLUMNS])

_HEAVY = ("crop", "image")  # cleared when a row is dropped: drops keep no pixels


# Engine error codes that the request itself earned (retrying sends the same request again).
_FINAL_ENGINE_ERRORS = ("bad_request", "prompt_too_long", "http_400", "http_404", "http_413", "http_422")


def retryable(reason: str, detail: str = "") -> bool:
    """Whether a drop was caused by the infrastructure (a failed model call, a crashed stage), not by the data.

    Engine errors are transient (timeouts, HTTP 429/5xx after the engine's own retries, connection
    errors, garbled responses, a failed generate) unless the request was refused for what it is.
    A stage crash counts as transient too; ``reliability.max_attempts`` bounds how often a
    deterministic crash on one input is retried.
    """
    if reason == "stage_error":
        return True
    return reason == "engine_error" and not (detail or "").startswith(_FINAL_ENGINE_ERRORS)


def is_dropped(row: dict) -> bool:
    return row.get("drop_stage") is not None


def drop(row: dict, stage: str, reason: str, detail: str = "") -> dict:
    """Mark ``row`` as dropped at ``stage`` (in place) and return it."""
    row["drop_stage"], row["drop_reason"], row["drop_detail"] = stage, reason, (detail or "")[:500]
    row["drop_retryable"] = retryable(reason, detail)
    for name in _HEAVY:
        row[name] = None
    return row


def child(parent: dict, first: bool, **values: Any) -> dict:
    """A fanned-out row: the parent's columns plus ``values``; only the first child keeps the usage."""
    row = dict(parent)
    row.update(values)
    if not first:
        row["usage"] = None
    return row


def image_complete(rows: list[dict]) -> bool:
    """Whether ``rows`` (all rows of one image seen so far) are every row that image becomes."""
    if any(r["object_index"] == -1 for r in rows):
        return True  # dropped before it fanned out to objects
    objects: dict[int, list[dict]] = {}
    for r in rows:
        objects.setdefault(r["object_index"], []).append(r)
    if len(objects) != rows[0]["n_objects"]:
        return False
    return all(any(r["question_index"] == -1 for r in group) or len(group) == group[0]["n_questions"]
               for group in objects.values())


def to_rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def to_table(rows: list[dict]) -> pa.Table:
    full = [{name: row.get(name) for name in ALL_COLUMNS} for row in rows]
    return pa.Table.from_pylist(full, schema=ROW_SCHEMA)


def output_table(table: pa.Table) -> pa.Table:
    """Kept rows of a ROW_SCHEMA table in the OUTPUT_COLUMNS layout."""
    kept = table.filter(pc.is_null(table["drop_stage"]))
    columns = {name: kept[name] for name in OUTPUT_COLUMNS if name != "source_image"}
    columns["source_image"] = kept["source"]
    return pa.table({name: columns[name] for name in OUTPUT_COLUMNS})


def drops_table(table: pa.Table, attempts: dict[str, int] | None = None) -> pa.Table:
    """Dropped rows of a ROW_SCHEMA table in the DROP_COLUMNS layout; ``attempts``: the run number per source (default 1)."""
    dropped = table.filter(pc.is_valid(table["drop_stage"]))
    renamed = {"stage": "drop_stage", "reason": "drop_reason", "detail": "drop_detail", "retryable": "drop_retryable"}
    attempts = attempts or {}
    columns = {name: dropped[renamed.get(name, name)] for name in DROP_COLUMNS if name not in ("retryable", "attempt")}
    columns["retryable"] = pc.fill_null(dropped["drop_retryable"], False)
    columns["attempt"] = pa.array([attempts.get(s, 1) for s in dropped["source"].to_pylist()], pa.int32())
    return pa.table({name: columns[name] for name in DROP_COLUMNS})
