"""The output directory and its resume manifest (local path or fsspec URI).

    output.dir/
      kept/<chunk>.parquet       kept rows (OUTPUT_COLUMNS); read with ray.data.read_parquet(".../kept")
      drops/<chunk>.parquet      one row per drop: source, stage, reason, detail (+ context)
      manifest.jsonl             one line per committed chunk: its images, stats and config hash
      stats.json                 all chunks merged, plus what the latest run did
      _staging/                  work in progress; never read

A chunk is committed by appending its manifest line (the whole manifest is rewritten with an
atomic rename or a single object PUT). Files of chunks without a manifest line are leftovers
of a killed run and are deleted before the next run starts.
"""

from __future__ import annotations

import json
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from zwz_ray.config import ConfigError
from zwz_ray.synth.accounting import merge_stats
from zwz_ray.uris import atomic_write, display, filesystem

MANIFEST = "manifest.jsonl"
STATS = "stats.json"


class OutputStore:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = filesystem(uri)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    # ------------------------------------------------------------------ reading

    def entries(self) -> list[dict]:
        path = self.path(MANIFEST)
        if not self.fs.exists(path):
            return []
        with self.fs.open(path, "r", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def finished_sources(self) -> set[str]:
        return {s for e in self.entries() for s in e["sources"]}

    def merged_stats(self) -> dict:
        total: dict = {}
        for entry in self.entries():
            total = merge_stats(total, entry["stats"])
        return total

    # ------------------------------------------------------------------ preparing a run

    def reset(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)

    def check_config(self, digest: str) -> None:
        other = {e["config_hash"] for e in self.entries()} - {digest}
        if other:
            raise ConfigError(
                f"{self.uri} holds rows made with a different configuration (hash {sorted(other)[0]}, now {digest}). "
                "Use a new output.dir, or set output.overwrite=true to start over."
            )

    def clean_uncommitted(self) -> None:
        committed = {e["chunk"] for e in self.entries()}
        for folder in ("kept", "drops"):
            for path in self._ls(self.path(folder)):
                if os.path.basename(path).split(".")[0] not in committed:
                    self.fs.rm(path)
        if self.fs.exists(self.path("_staging")):
            self.fs.rm(self.path("_staging"), recursive=True)

    def new_chunk_id(self) -> str:
        return f"c{len(self.entries()):05d}_{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ committing

    def staging_path(self, chunk: str) -> str:
        self.fs.makedirs(self.path("_staging"), exist_ok=True)
        return self.path("_staging", f"{chunk}.parquet")

    def commit(self, chunk: str, staged_kept: str | None, drops: pa.Table, entry: dict) -> None:
        """Publish the chunk's kept file and drops, then append its manifest line (the commit point)."""
        for folder in ("kept", "drops", "_staging"):
            self.fs.makedirs(self.path(folder), exist_ok=True)
        if staged_kept is not None:
            self.fs.mv(staged_kept, self.path("kept", f"{chunk}.parquet"))
        staged_drops = self.path("_staging", f"{chunk}-drops.parquet")
        with self.fs.open(staged_drops, "wb") as fh:
            pq.write_table(drops, fh)
        self.fs.mv(staged_drops, self.path("drops", f"{chunk}.parquet"))
        lines = [json.dumps(e, sort_keys=True) for e in [*self.entries(), {**entry, "chunk": chunk}]]
        self.write_text(MANIFEST, "\n".join(lines) + "\n")

    def write_text(self, name: str, text: str) -> None:
        """Replace ``name`` atomically (rename locally, a single PUT on object stores)."""
        atomic_write(display(self.fs, self.path(name)), text)

    def _ls(self, path: str) -> list[str]:
        if not self.fs.exists(path):
            return []
        return [p for p in self.fs.find(path) if not self.fs.isdir(p)]
