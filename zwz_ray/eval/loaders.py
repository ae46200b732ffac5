"""Benchmark loaders: ZoomBench parquet and generic JSON / JSONL / parquet (V*, HR-Bench, MME-RealWorld...).

:func:`open_benchmark` finds the files, picks the layout, maps fields to columns and checks
types from the parquet footer or the JSON records, before any image is read. Every schema
problem raises :class:`BenchmarkError` naming the column and the file.
:meth:`Benchmark.dataset` streams items through Ray Data; :meth:`Benchmark.iter_items`
reads them in a plain loop (tests, the sequential baseline, coverage).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from zwz_ray import uris
from zwz_ray.eval.config import BenchmarkConfig
from zwz_ray.eval.items import OPTION_LETTER_COLUMNS, normalize_items

REQUIRED = ("question", "answer", "image")
ZOOMBENCH_COLUMNS = {"id": "id", "question": "query", "answer": "response", "image": "image", "crop": "crop_image",
                     "bbox": "bbox", "category": "question_type", "options": "options"}
# The hub copy of ZoomBench may name the question and answer columns prompt / answer.
ZOOMBENCH_ALTERNATIVES = {"question": ("query", "prompt"), "answer": ("response", "answer")}
GENERIC_CANDIDATES = {
    "id": ("id", "question_id", "qid", "index", "idx"),
    "question": ("question", "query", "prompt", "problem", "text"),
    "answer": ("answer", "response", "gt_answer", "ground_truth", "label"),
    "image": ("image", "image_path", "img", "img_path", "image_file", "file_name"),
    "crop": ("crop", "crop_image", "crop_path", "region_image"),
    "bbox": ("bbox", "box", "bbox_xyxy", "target_bbox"),
    "category": ("category", "question_type", "dimension", "type", "task", "subtask", "l2-category"),
    "options": ("options", "choices", "candidates"),
}
EXTENSIONS = (".parquet", ".jsonl", ".json")


class BenchmarkError(ValueError):
    """A benchmark file that cannot be used as given: missing, unreadable, or with a bad column."""


@dataclass
class Benchmark:
    name: str
    format: str  # zoombench | generic
    files: list[str]
    kind: str  # parquet | json
    columns: dict[str, str]  # field -> column name in the files
    base_dir: str  # image paths are relative to it
    bbox_format: str = "xyxy"
    limit: int | None = None
    records: list[dict] = field(default_factory=list, repr=False)  # json kinds: the raw rows

    def _normalize_kwargs(self) -> dict:
        return {"columns": self.columns, "base_dir": self.base_dir, "bbox_format": self.bbox_format}

    def iter_items(self, batch_size: int = 16) -> Iterator[pd.DataFrame]:
        """Items in file order, in batches (a plain loop, no Ray)."""
        seen = 0
        for raw in self._raw_batches(batch_size):
            if self.limit is not None:
                raw = raw.iloc[: max(0, self.limit - seen)]
            if raw.empty:
                return
            yield normalize_items(raw, start_index=seen, **self._normalize_kwargs())
            seen += len(raw)

    def _raw_batches(self, batch_size: int) -> Iterator[pd.DataFrame]:
        if self.kind == "json":
            for start in range(0, len(self.records), batch_size):
                yield pd.DataFrame(self.records[start : start + batch_size])
            return
        for path in self.files:
            fs, inner = uris.filesystem(path)
            with fs.open(inner, "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_size, columns=self._source_columns(path)):
                    yield batch.to_pandas()

    def _source_columns(self, path: str) -> list[str]:
        names = set(_parquet_schema(path).names)
        wanted = list(self.columns.values()) + [c for c in OPTION_LETTER_COLUMNS if c in names]
        return [c for c in dict.fromkeys(wanted) if c in names]

    def dataset(self):
        """A Ray Dataset of items (:data:`zwz_ray.eval.items.ITEM_COLUMNS`)."""
        import ray

        if self.kind == "json":
            records = self.records[: self.limit] if self.limit else self.records
            for i, r in enumerate(records):
                r.setdefault("__row__", i)
            columns = self.columns if "id" in self.columns else {**self.columns, "id": "__row__"}
            ds = ray.data.from_pandas(_arrow_safe(pd.DataFrame(records), columns))
        else:
            fs, _ = uris.filesystem(self.files[0])
            ds = ray.data.read_parquet(
                [uris.filesystem(f)[1] for f in self.files], filesystem=_arrow_fs(fs), columns=self._source_columns(self.files[0])
            )
            columns = self.columns
            if self.limit:
                ds = ds.limit(self.limit)
        kwargs = {**self._normalize_kwargs(), "columns": columns}
        return ds.map_batches(normalize_items, batch_format="pandas", fn_kwargs=kwargs, batch_size=16)


def _arrow_safe(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Scalar fields as text, so JSON rows mixing numbers and strings convert to Arrow."""
    df = df[[c for c in dict.fromkeys(list(columns.values()) + list(OPTION_LETTER_COLUMNS)) if c in df.columns]].copy()
    for f in ("id", "question", "answer", "category", *OPTION_LETTER_COLUMNS):
        col = columns.get(f, f if f in OPTION_LETTER_COLUMNS else None)
        if col in df.columns:
            df[col] = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in df[col]]
    return df


# --------------------------------------------------------------------------- discovery


def _arrow_fs(fs):
    from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

    return LocalFileSystem() if "file" in fs.protocol or "local" in fs.protocol else PyFileSystem(FSSpecHandler(fs))


def find_files(path: str) -> list[str]:
    """Benchmark files under ``path``: the file itself, a glob, or a folder's parquet (else JSON/JSONL) files."""
    try:
        fs, inner = uris.filesystem(path)
        if any(ch in inner for ch in "*?["):
            found = sorted(fs.glob(inner))
        elif fs.isdir(inner):
            found = sorted(f for f in fs.find(inner) if f.lower().endswith(EXTENSIONS))
            parquet = [f for f in found if f.lower().endswith(".parquet")]
            found = parquet or found
        elif fs.exists(inner):
            found = [inner]
        else:
            raise BenchmarkError(f"benchmark not found: {path}")
    except BenchmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types
        raise BenchmarkError(f"cannot list benchmark {path}: {type(exc).__name__}: {exc}") from exc
    if not found:
        raise BenchmarkError(f"no benchmark files ({', '.join(EXTENSIONS)}) under {path}")
    return [uris.display(fs, f, like=path) for f in found]


def _parquet_schema(path: str) -> pa.Schema:
    try:
        fs, inner = uris.filesystem(path)
        with fs.open(inner, "rb") as fh:
            return pq.read_schema(fh)
    except Exception as exc:  # noqa: BLE001
        raise BenchmarkError(f"cannot read benchmark file {path} as parquet: {type(exc).__name__}: {exc}") from exc


def _json_records(path: str) -> list[dict]:
    try:
        fs, inner = uris.filesystem(path)
        with fs.open(inner, "r", encoding="utf-8") as fh:
            text = fh.read()
        if path.lower().endswith(".jsonl"):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            rows = data.get("data", data.get("items")) if isinstance(data, dict) else data
    except Exception as exc:  # noqa: BLE001
        raise BenchmarkError(f"cannot read benchmark file {path} as JSON: {type(exc).__name__}: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BenchmarkError(f"{path}: expected a list of objects (or JSON lines), one per question")
    return rows


# --------------------------------------------------------------------------- columns and types


def detect_format(names: list[str]) -> str:
    return "zoombench" if {"query", "response", "image"} <= set(names) else "generic"


def map_columns(names: list[str], fmt: str, overrides: dict[str, str], where: str) -> dict[str, str]:
    """field -> column for the fields present; a missing required column or override is an error."""
    present = set(names)
    if fmt == "zoombench":
        mapping = {f: c for f, c in ZOOMBENCH_COLUMNS.items() if c in present}
        for f, names in ZOOMBENCH_ALTERNATIVES.items():
            mapping.setdefault(f, next((c for c in names if c in present), ZOOMBENCH_COLUMNS[f]))
        for f in ("id", "question", "answer", "image"):
            mapping.setdefault(f, ZOOMBENCH_COLUMNS[f])
    else:
        mapping = {}
        for f, options in GENERIC_CANDIDATES.items():
            hit = next((c for c in options if c in present), None)
            if hit:
                mapping[f] = hit
    mapping.update(overrides)
    for f, col in mapping.items():
        if col not in present:
            raise BenchmarkError(
                f"{where}: column {col!r} (the {f!r} field of the {fmt} format) is missing; columns are {sorted(present)}"
                f" (map another column with benchmark.columns.{f}=NAME)"
            )
    for f in REQUIRED:
        if f not in mapping:
            raise BenchmarkError(
                f"{where}: no column for the required {f!r} field (looked for {list(GENERIC_CANDIDATES[f])}); columns are "
                f"{sorted(present)}. Set benchmark.columns.{f}=NAME"
            )
    return mapping


def _arrow_kind(tp: pa.DataType) -> str:
    if pa.types.is_dictionary(tp):
        tp = tp.value_type
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return "str"
    if pa.types.is_binary(tp) or pa.types.is_large_binary(tp):
        return "bytes"
    if pa.types.is_integer(tp) or pa.types.is_floating(tp):
        return "number"
    if pa.types.is_struct(tp):
        return "image_struct" if {"bytes", "path"} & {tp.field(i).name for i in range(tp.num_fields)} else "struct"
    if pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp):
        return "list"
    return str(tp)


def _py_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "image_struct" if {"bytes", "path"} & set(value) else "struct"
    return "list" if isinstance(value, list) else type(value).__name__


ALLOWED = {
    "id": ({"str", "number"}, "a string or an integer"),
    "question": ({"str"}, "text"),
    "answer": ({"str", "number"}, "text or a number"),
    "image": ({"bytes", "image_struct", "str"}, "image bytes, a {bytes, path} struct or a path"),
    "crop": ({"bytes", "image_struct", "str"}, "image bytes, a {bytes, path} struct or a path"),
    "bbox": ({"list", "str"}, "a list of four numbers"),
    "category": ({"str", "number"}, "text"),
    "options": ({"list", "str"}, "a list of option texts"),
}


def check_types(kinds: dict[str, str], mapping: dict[str, str], where: str) -> None:
    for f, col in mapping.items():
        allowed, words = ALLOWED[f]
        kind = kinds.get(col)
        if kind is not None and kind not in allowed:
            raise BenchmarkError(f"{where}: column {col!r} (the {f!r} field) has type {kind}; expected {words}")


def _json_kinds(rows: list[dict], mapping: dict[str, str], where: str) -> dict[str, str]:
    """The kind of each mapped column, checking every row (the first bad row is named)."""
    kinds: dict[str, str] = {}
    for i, row in enumerate(rows):
        for f, col in mapping.items():
            value = row.get(col)
            if value is None:
                continue
            kind = _py_kind(value)
            if kind not in ALLOWED[f][0]:
                raise BenchmarkError(f"{where} row {i}: column {col!r} (the {f!r} field) is {kind} {value!r:.60}; "
                                     f"expected {ALLOWED[f][1]}")
            kinds.setdefault(col, kind)
    return kinds


def _check_ids(files: list[str], kind: str, records: list[dict], column: str | None) -> None:
    """Item ids must be unique: they key the views, the resume and the zooming gap."""
    if column is None:
        return
    if kind == "json":
        ids = [str(r.get(column)) for r in records]
    else:
        ids = []
        for path in files:
            fs, inner = uris.filesystem(path)
            with fs.open(inner, "rb") as fh:
                ids.extend(str(v) for v in pq.read_table(fh, columns=[column]).column(column).to_pylist())
    counts = pd.Series(ids).value_counts()
    dupes = counts[counts > 1]
    if len(dupes):
        raise BenchmarkError(f"{files[0]}: column {column!r} (the 'id' field) has repeated values, e.g. "
                             f"{list(dupes.index[:3])}; ids must be unique (map another column with benchmark.columns.id)")


# --------------------------------------------------------------------------- entry point


def open_benchmark(cfg: BenchmarkConfig) -> Benchmark:
    """Find, identify and check a benchmark; no image is read yet."""
    files = find_files(cfg.path)
    kinds = {os.path.splitext(f)[1].lower() for f in files}
    if len(kinds) > 1:
        raise BenchmarkError(f"{cfg.path}: mixes {sorted(kinds)} files; point benchmark.path at one kind")
    kind = "parquet" if kinds == {".parquet"} else "json"
    records: list[dict] = []
    if kind == "parquet":
        schemas = {f: _parquet_schema(f) for f in files}
        first = files[0]
        names = schemas[first].names
        fmt = detect_format(names) if cfg.format == "auto" else cfg.format
        mapping = map_columns(names, fmt, cfg.columns, first)
        for f, schema in schemas.items():
            map_columns(schema.names, fmt, cfg.columns, f)
            check_types({n: _arrow_kind(schema.field(n).type) for n in schema.names}, mapping, f)
    else:
        for f in files:
            records.extend(_json_records(f))
        if not records:
            raise BenchmarkError(f"{cfg.path}: the benchmark has no rows")
        names = sorted({k for r in records for k in r})
        fmt = detect_format(names) if cfg.format == "auto" else cfg.format
        mapping = map_columns(names, fmt, cfg.columns, files[0])
        check_types(_json_kinds(records, mapping, files[0]), mapping, files[0])
    _check_ids(files, kind, records, mapping.get("id"))
    fs, inner = uris.filesystem(cfg.path)
    base = inner if fs.isdir(inner) else os.path.dirname(uris.filesystem(files[0])[1])
    base_dir = uris.display(fs, base, like=cfg.path)  # relative image paths in the files resolve against it
    name = cfg.name or os.path.basename(cfg.path.rstrip("/")).rsplit(".", 1)[0]
    return Benchmark(name, fmt, files, kind, mapping, base_dir, cfg.bbox_format, cfg.limit, records)
