"""Rows for driving synthesis stages directly in tests (the pipeline itself starts from ``{"source": ...}``)."""

from __future__ import annotations

from typing import Any

from zwz_ray.synth.columns import ALL_COLUMNS


def new_row(source: str) -> dict:
    """An image-level row of ROW_SCHEMA: every column None except the source and the unit indices."""
    row: dict[str, Any] = dict.fromkeys(ALL_COLUMNS)
    row.update(source=source, object_index=-1, question_index=-1)
    return row
