"""Per-model prediction files in ``output.dir``: resumable and crash-safe.

``predictions/<model>.parquet`` holds one row per (item, view). While a model runs, every
finished batch is also written as a part file under ``predictions/.parts/<model>/``; a run
that dies keeps its answered rows, and the next run reads the parts, skips those rows and
folds everything into the one file at the end. Paths are kept in the form of ``output.dir`` (a local
path or a URI, ``zwz_ray.uris``); fsspec filesystems accept both.

Answers are keyed by :func:`answer_fingerprint`, which follows the model's *content*: a model re-exported
at the same path with other weights is answered again. ``predictions/benchmark_keys.json`` and
``coverage/<model>.json`` let a rerun with nothing new skip loading the model at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid

import pandas as pd

from zwz_ray import uris

PREDICTION_COLUMNS = [
    "model", "id", "view", "question", "answer", "category", "is_mcq", "response", "extracted", "verdict", "correct",
    "rule", "error", "judge_output", "latency_s", "batch_latency_s", "prompt_tokens", "completion_tokens", "finish_reason",
    "answered_at", "fingerprint",
]
KEY = ["id", "view"]
BENCHMARK_KEYS = "benchmark_keys.json"  # the (item, view) keys of the benchmark, so a rerun knows what is new without the model


def model_slug(label: str) -> str:
    """A file-name-safe form of a model label."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")
    return slug or "model"


class PredictionStore:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.fs, _ = uris.filesystem(out_dir)

    def path(self, label: str) -> str:
        return uris.join(self.out_dir, "predictions", f"{model_slug(label)}.parquet")

    def _parts_dir(self, label: str) -> str:
        return uris.join(self.out_dir, "predictions", ".parts", model_slug(label))

    def _read(self, path: str) -> pd.DataFrame:
        with self.fs.open(path, "rb") as fh:
            return pd.read_parquet(fh)

    def load(self, label: str) -> pd.DataFrame:
        """Everything answered so far for ``label`` (the file plus parts of an unfinished run); last write wins."""
        frames = []
        if self.fs.exists(self.path(label)):
            frames.append(self._read(self.path(label)))
        parts_dir = self._parts_dir(label)
        if self.fs.exists(parts_dir):
            frames.extend(self._read(p) for p in sorted(self.fs.glob(parts_dir + "/*.parquet")))
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=PREDICTION_COLUMNS)
        df = pd.concat(frames, ignore_index=True)
        return df.drop_duplicates(KEY, keep="last").reset_index(drop=True)

    def done_keys(self, label: str, fingerprint: str | None = None) -> set[str]:
        """(item, view) keys already answered without an error (and with the same settings, given a fingerprint)."""
        from zwz_ray.eval.items import view_key

        df = self.load(label)
        ok = df[df["rule"] != "error"] if not df.empty else df
        if fingerprint is not None and not ok.empty:
            ok = ok[ok["fingerprint"] == fingerprint] if "fingerprint" in ok else ok.iloc[0:0]
        return {view_key(str(i), str(v)) for i, v in zip(ok["id"], ok["view"])}

    def append_part(self, label: str, df: pd.DataFrame) -> None:
        if df.empty:
            return
        name = f"{pd.Timestamp.now('UTC').strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}.parquet"
        self._write(df, uris.join(self._parts_dir(label), name))

    def save(self, label: str, df: pd.DataFrame) -> str:
        """Write the one file for ``label`` (atomically) and drop the parts."""
        path = self.path(label)
        df = df.sort_values(KEY, key=lambda s: s.astype(str).str.zfill(16)).reset_index(drop=True)
        self._write(df, path)
        if self.fs.exists(self._parts_dir(label)):
            self.fs.rm(self._parts_dir(label), recursive=True)
        return path

    # ------------------------------------------------------------------ what a rerun can reuse

    def _read_json(self, path: str) -> dict | None:
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)

    def benchmark_keys(self, fingerprint: str) -> set[str] | None:
        """The (item, view) keys recorded for the benchmark with this fingerprint, or None."""
        data = self._read_json(uris.join(self.out_dir, "predictions", BENCHMARK_KEYS))
        return set(data["keys"]) if data and data.get("fingerprint") == fingerprint else None

    def save_benchmark_keys(self, fingerprint: str, keys: set[str]) -> None:
        uris.atomic_write(uris.join(self.out_dir, "predictions", BENCHMARK_KEYS),
                          json.dumps({"fingerprint": fingerprint, "keys": sorted(keys)}))

    def coverage(self, label: str, fingerprint: str) -> dict | None:
        """The coverage summary stored for ``label`` with this fingerprint (model content, settings, items), or None."""
        data = self._read_json(self._coverage_path(label))
        return data["summary"] if data and data.get("fingerprint") == fingerprint else None

    def save_coverage(self, label: str, fingerprint: str, summary: dict) -> None:
        uris.atomic_write(self._coverage_path(label), json.dumps({"fingerprint": fingerprint, "summary": summary}, default=str))

    def _coverage_path(self, label: str) -> str:
        return uris.join(self.out_dir, "coverage", f"{model_slug(label)}.json")

    @staticmethod
    def _write(df: pd.DataFrame, path: str) -> None:
        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        uris.atomic_write(path, buffer.getvalue())


def content_digest(data) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def answer_fingerprint(model, inference) -> str:
    """What decides an answer: the model's content (:func:`model_identity`) and how it is asked (not where or
    how fast it runs). A model re-exported with other weights at the same path gets a new fingerprint."""
    from zwz_ray.config import to_dict
    from zwz_ray.prompts import PROMPT_VERSION

    keys = ("backend", "dtype", "min_pixels", "max_pixels", "seed")
    asked = {k: v for k, v in to_dict(inference).items() if k != "views"}
    data = {"model": {**{k: getattr(model, k) for k in keys}, "model": model_identity(model.model)}, "inference": asked,
            "prompts": PROMPT_VERSION}
    return content_digest(data)


_IDENTITIES: dict[tuple, str] = {}  # (reference, file listing) -> identity: hash each export's bytes once per process


def model_identity(ref: str) -> str:
    """The content of the model a reference names: for a local directory a hash of every file's name and
    bytes, for a remote one of every file's name, size and ETag (or modification time); hub ids and
    ``tiny:`` references (built deterministically) stand for themselves."""
    if uris.is_remote(ref):
        fs, inner = uris.filesystem(ref)
        if not fs.exists(inner) or not fs.isdir(inner):
            return ref
        listing = sorted((p[len(inner):], info.get("size"), info.get("ETag") or info.get("etag") or info.get("mtime")
                          or info.get("LastModified") or info.get("created")) for p, info in fs.find(inner, detail=True).items())
        return f"{ref}@{content_digest(listing)}"
    local = None if ref.startswith("tiny:") else uris.local_path(ref)
    if local is None or not os.path.isdir(local):
        return ref
    files = sorted(os.path.relpath(os.path.join(d, f), local) for d, _, names in os.walk(local) for f in names
                   if not f.startswith("."))
    listing = tuple((f, os.stat(os.path.join(local, f)).st_size, os.stat(os.path.join(local, f)).st_mtime_ns) for f in files)
    key = (os.path.abspath(local), listing)
    if key not in _IDENTITIES:
        h = hashlib.sha256()
        for name in files:
            h.update(name.encode() + b"\0")
            with open(os.path.join(local, name), "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
        _IDENTITIES[key] = f"sha256:{h.hexdigest()[:16]}"
    return _IDENTITIES[key]


def benchmark_fingerprint(bench, views: list[str]) -> str:
    """Which (item, view) keys a benchmark has: its files (name, size, modification), layout, limit and views."""
    files = []
    for path in bench.files:
        fs, inner = uris.filesystem(path)
        info = fs.info(inner)
        files.append([path, info.get("size"), info.get("ETag") or info.get("mtime") or info.get("created")])
    return content_digest({"files": files, "kind": bench.kind, "columns": bench.columns, "limit": bench.limit, "views": list(views),
                    "records": len(bench.records)})


def merge_predictions(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Old rows updated by new rows with the same (id, view)."""
    frames = [f for f in (old, new) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    merged = pd.concat(frames, ignore_index=True).drop_duplicates(KEY, keep="last")
    return merged.reset_index(drop=True)
