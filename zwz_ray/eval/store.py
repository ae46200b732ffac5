"""Per-model prediction files in ``output.dir``: resumable and crash-safe.

``predictions/<model>.parquet`` holds one row per (item, view). While a model runs, every
finished batch is also written as a part file under ``predictions/.parts/<model>/``; a run
that dies keeps its answered rows, and the next run reads the parts, skips those rows and
folds everything into the one file at the end. Paths are kept in the form of ``output.dir`` (a local
path or a URI, ``zwz_ray.uris``); fsspec filesystems accept both.
"""

from __future__ import annotations

import io
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

    @staticmethod
    def _write(df: pd.DataFrame, path: str) -> None:
        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        uris.atomic_write(path, buffer.getvalue())


def answer_fingerprint(model, inference) -> str:
    """What decides an answer: the model and how it is asked (not where or how fast it runs)."""
    import hashlib
    import json

    from zwz_ray.config import to_dict
    from zwz_ray.prompts import PROMPT_VERSION

    keys = ("backend", "model", "dtype", "min_pixels", "max_pixels", "seed")
    asked = {k: v for k, v in to_dict(inference).items() if k != "views"}
    data = {"model": {k: getattr(model, k) for k in keys}, "inference": asked, "prompts": PROMPT_VERSION}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def merge_predictions(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Old rows updated by new rows with the same (id, view)."""
    frames = [f for f in (old, new) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    merged = pd.concat(frames, ignore_index=True).drop_duplicates(KEY, keep="last")
    return merged.reset_index(drop=True)
