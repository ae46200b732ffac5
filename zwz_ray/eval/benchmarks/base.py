"""What a preset is, and how a preset benchmark is read.

A :class:`Preset` names a published layout: the columns every file has, how one published row
becomes evaluation items (``convert``: our fields ``id question answer image crop bbox category
options`` plus the breakdown's own ``meta`` fields), how one view's predictions are scored, and
where the benchmark is published. :class:`PresetBenchmark` reads it: parquet streams through Ray
Data (the images never pass through the driver), TSV / JSON / folder layouts are read into
records. Opening reads every row without its image columns, so a bad value anywhere is a
:class:`BenchmarkError` naming the file, the row and the column before any model runs.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from zwz_ray.eval.config import FIELDS
from zwz_ray.eval.items import normalize_items
from zwz_ray.eval.loaders import Benchmark, BenchmarkError, _arrow_fs, _arrow_kind

TABLE_EXTENSIONS = (".parquet", ".tsv", ".jsonl", ".json")


class LayoutError(ValueError):
    """A published row that does not fit its layout; ``column`` is the column at fault."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class Preset:
    name: str  # benchmark.preset=<name>
    title: str  # the column of the suite table
    path: str  # where it is published
    columns: tuple[str, ...]  # columns every file of the layout has
    convert: Callable[[dict], list[dict]]  # one published row -> its items (fields + meta)
    score: Callable[[pd.DataFrame], dict]  # one view's predictions (+ meta) -> {"headline": ..., breakdown...}
    source: str  # where the layout is documented
    files: tuple[str, ...] = ()  # globs inside a folder, the first that matches wins; () = every table file
    image_columns: tuple[str, ...] = ("image",)  # not read when the rows are checked
    meta: tuple[str, ...] = ()  # item fields the breakdown needs besides id and category
    rule: Callable[[str | None, str], tuple[str | None, bool, str]] | None = None  # replaces the judging cascade
    reader: Callable[[str], list[tuple[str, dict]]] | None = None  # layouts that are not tables: (where, row) pairs


# --------------------------------------------------------------------------- helpers for convert functions


def as_list(value) -> list:
    """A list cell as a Python list: lists, arrays, JSON text or a Python-literal string ("['(A) x', ...]")."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, (list, tuple)):
                return list(parsed)
    raise ValueError(f"expected a list, got {type(value).__name__} {str(value)[:60]!r}")


def need(row: dict, column: str, kind: type | tuple = str):
    """A required value of ``kind``; None, NaN or another type is a :class:`LayoutError` for ``column``."""
    value = row.get(column)
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise LayoutError(column, "is empty")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise LayoutError(column, f"is {type(value).__name__} {str(value)[:60]!r}")
    return value


def letter(value, column: str, letters: str = "ABCDEFGH") -> str:
    """A gold option letter: "B", "(B)", "b." -> "B"; anything else is a :class:`LayoutError`."""
    text = str(need(row={column: value}, column=column, kind=(str, int))).strip().strip("().").upper()
    if len(text) != 1 or text not in letters:
        raise LayoutError(column, f"is {value!r}, not one of the letters {', '.join(letters)}")
    return text


def with_options(question: str, options: list[str]) -> str:
    """The question with its options on lines "(A) text", as every letter benchmark shows them."""
    lines = [f"({chr(65 + i)}) {str(o).strip()}" for i, o in enumerate(options)]
    return question.strip() + "\n" + "\n".join(lines)


def accuracy(df: pd.DataFrame) -> dict:
    n = int(len(df))
    return {"n": n, "accuracy": float(df["correct"].astype(bool).mean()) if n else None}


def by(df: pd.DataFrame, column: str) -> dict:
    """Accuracy per value of ``column``."""
    values = df[column].dropna().astype(str)
    return {v: accuracy(df[df[column].astype(str) == v]) for v in sorted(values.unique())}


def mean_of(parts: dict) -> float | None:
    """Unweighted mean of the accuracies in ``{name: {"accuracy": ...}}`` (classes count equally)."""
    values = [p["accuracy"] for p in parts.values() if p.get("accuracy") is not None]
    return float(np.mean(values)) if values else None


def plain_score(df: pd.DataFrame, *columns: str) -> dict:
    """Overall accuracy as the headline, and accuracy per value of each of ``columns``."""
    out = {"headline": accuracy(df)["accuracy"], **accuracy(df)}
    for c in columns:
        out[f"by_{c}"] = by(df, c)
    return out


# --------------------------------------------------------------------------- files


def preset_files(path: str, preset: Preset) -> list[str]:
    """The layout's files under ``path`` (a file, or a folder searched with the preset's globs)."""
    try:
        fs, local = url_to_fs(path)
        if fs.isfile(local):
            found = [local]
        elif fs.isdir(local):
            found = []
            for pattern in preset.files or ("**/*",):
                found = sorted(f for f in fs.glob(f"{local.rstrip('/')}/{pattern}") if f.lower().endswith(TABLE_EXTENSIONS))
                if found:
                    break
            kinds = {os.path.splitext(f)[1].lower() for f in found}
            if len(kinds) > 1:  # a repository publishing parquet and TSV copies: read the parquet
                found = [f for f in found if f.lower().endswith(".parquet")] or found
        else:
            raise BenchmarkError(f"benchmark not found: {path}")
    except BenchmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types
        raise BenchmarkError(f"cannot list benchmark {path}: {type(exc).__name__}: {exc}") from exc
    if not found:
        raise BenchmarkError(f"no {preset.name} files ({', '.join(preset.files or TABLE_EXTENSIONS)}) under {path}")
    return [fs.unstrip_protocol(f) if "://" in path else f for f in found]


def _columns_of(path: str) -> list[str]:
    fs, local = url_to_fs(path)
    try:
        with fs.open(local, "rb") as fh:
            return pq.read_schema(fh).names
    except Exception as exc:  # noqa: BLE001
        raise BenchmarkError(f"cannot read benchmark file {path} as parquet: {type(exc).__name__}: {exc}") from exc


def _table_rows(path: str) -> list[dict]:
    """Every row of a TSV / JSON / JSONL file."""
    fs, local = url_to_fs(path)
    try:
        with fs.open(local, "r", encoding="utf-8") as fh:
            if path.lower().endswith(".tsv"):  # VLMEvalKit's layout: a header line, base64 images in cells
                return pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False).to_dict("records")
            text = fh.read()
        if path.lower().endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - parsers raise many types
        raise BenchmarkError(f"cannot read benchmark file {path}: {type(exc).__name__}: {exc}") from exc
    rows = data.get("data", data.get("items")) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BenchmarkError(f"{path}: expected a list of objects (or JSON lines), one per question")
    return rows


def _metadata_rows(path: str, preset: Preset, names: list[str]) -> list[dict]:
    """Parquet rows without image bytes: an image struct keeps only its ``path`` (ids may derive from it)."""
    fs, local = url_to_fs(path)
    with fs.open(local, "rb") as fh:
        pf = pq.ParquetFile(fh)
        schema = pf.schema_arrow
        plain = [n for n in names if n not in preset.image_columns]
        table = pf.read(columns=plain)
        for col in preset.image_columns:
            if col in names and _arrow_kind(schema.field(col).type) == "image_struct":
                paths = [p.get("path") if isinstance(p, dict) else p for p in pf.read(columns=[f"{col}.path"]).column(0).to_pylist()]
                table = table.append_column(col, pa.array([{"path": p} for p in paths], pa.struct([("path", pa.string())])))
    return table.to_pylist()


def _convert(preset: Preset, row: dict, where: str) -> list[dict]:
    try:
        items = preset.convert(row)
    except LayoutError as exc:
        raise BenchmarkError(f"{where}: column {exc.column!r} of the {preset.name} layout {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise BenchmarkError(f"{where}: not the {preset.name} layout ({type(exc).__name__}: {exc})") from None
    return items


def convert_batch(batch: pd.DataFrame, preset: Preset) -> pd.DataFrame:
    """Published rows -> item rows (a Ray Data batch function; rows were checked when the benchmark opened)."""
    rows = [item for row in batch.to_dict("records") for item in _convert(preset, row, f"{preset.name} row")]
    return pd.DataFrame(rows, columns=list(FIELDS) + list(preset.meta))


# --------------------------------------------------------------------------- the benchmark


@dataclass
class PresetBenchmark(Benchmark):
    """A benchmark read through a preset; ``item_meta`` holds id, category and the preset's meta fields."""

    preset: Preset | None = None
    item_meta: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    read_columns: dict[str, list[str]] = field(default_factory=dict, repr=False)  # parquet file -> columns to read

    def _item_kwargs(self) -> dict:
        cols = {f: f for f in FIELDS}
        return {"columns": cols, "base_dir": self.base_dir, "image_root": self.image_root, "image_prefix": self.image_prefix}

    def _converted(self, batch_size: int) -> Iterator[pd.DataFrame]:
        if self.kind != "parquet":
            for start in range(0, len(self.records), batch_size):
                yield pd.DataFrame(self.records[start:start + batch_size], columns=list(FIELDS))
            return
        for path in self.files:
            fs, local = url_to_fs(path)
            with fs.open(local, "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_size, columns=self.read_columns[path]):
                    yield convert_batch(batch.to_pandas(), self.preset)

    def iter_items(self, batch_size: int = 16) -> Iterator[pd.DataFrame]:
        seen = 0
        for raw in self._converted(batch_size):
            if self.limit is not None:
                raw = raw.iloc[: max(0, self.limit - seen)]
            if raw.empty:
                if self.limit is not None and seen >= self.limit:
                    return
                continue
            yield normalize_items(raw, start_index=seen, **self._item_kwargs())
            seen += len(raw)

    def dataset(self):
        import ray

        if self.kind != "parquet":
            records = self.records[: self.limit] if self.limit else self.records
            frame = pd.DataFrame(records, columns=list(FIELDS))
            for col in ("id", "question", "answer", "category"):
                frame[col] = [None if v is None else str(v) for v in frame[col]]
            ds = ray.data.from_pandas(frame)
        else:
            fs, _ = url_to_fs(self.files[0])
            ds = ray.data.read_parquet([url_to_fs(f)[1] for f in self.files], filesystem=_arrow_fs(fs),
                                       columns=self.read_columns[self.files[0]])
            ds = ds.map_batches(convert_batch, batch_format="pandas", fn_kwargs={"preset": self.preset}, batch_size=16)
            if self.limit:
                ds = ds.limit(self.limit)
        return ds.map_batches(normalize_items, batch_format="pandas", fn_kwargs=self._item_kwargs(), batch_size=16)


def read_preset(preset: Preset, path: str) -> tuple[list[str], str, list[dict], list[dict], dict[str, list[str]]]:
    """(files, kind, item records for table kinds, item metadata, parquet columns to read); every row checked."""
    records, meta, read_columns = [], [], {}
    pairs = preset.reader(path) if preset.reader is not None else None
    if pairs is not None:
        files, kind = [path], "folder"
    else:
        files = preset_files(path, preset)
        kind = "parquet" if all(f.lower().endswith(".parquet") for f in files) else "table"
        pairs = []
        for f in files:
            rows = None if kind == "parquet" else _table_rows(f)
            names = _columns_of(f) if rows is None else sorted({k for r in rows for k in r})
            missing = [c for c in preset.columns if c not in names]
            if missing:
                raise BenchmarkError(f"{f}: column {missing[0]!r} of the {preset.name} layout is missing "
                                     f"(it needs {list(preset.columns)}); columns are {sorted(names)}")
            if kind == "parquet":
                read_columns[f] = names
                pairs.extend((f"{f} row {i}", r) for i, r in enumerate(_metadata_rows(f, preset, names)))
            else:
                pairs.extend((f"{f} row {i}", r) for i, r in enumerate(rows))
    if not pairs:
        raise BenchmarkError(f"{path}: the benchmark has no rows")
    for i, (where, row) in enumerate(pairs):
        if kind != "parquet":  # rows read here have a place; a parquet row read by Ray Data does not
            row = {**row, "__row__": i}
        for item in _convert(preset, row, where):
            meta.append({k: item.get(k) for k in ("id", "category", *preset.meta)})
            if kind != "parquet":
                records.append({k: item.get(k) for k in FIELDS})
    return files, kind, records, meta, read_columns
