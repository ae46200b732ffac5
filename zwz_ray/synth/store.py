"""The output directory and its resume manifest (local path or fsspec URI).

    output.dir/
      kept/<chunk>.parquet       kept rows (OUTPUT_COLUMNS); read with ray.data.read_parquet(".../kept")
      drops/<chunk>.parquet      one row per drop: source, stage, reason, detail (+ context)
      manifest.jsonl             one line per committed chunk: its images, stats and config hash
      stats.json                 all chunks merged, plus what the latest run did
      _staging/                  work in progress; never read

A chunk is committed by appending its manifest line (the whole manifest is rewritten with an
atomic rename or a single object PUT). Files of chunks without a manifest line are leftovers
of a killed run (or of a failed write) and are deleted before the next run starts.

Retries. An image whose rows include a retryable drop (a failed model call, a crashed stage) is
listed under its chunk's ``retry`` with its attempt number and its own stats; it is not finished
until an attempt has no retryable drop or ``reliability.max_attempts`` attempts were made. A rerun
redoes it; the chunk that commits the new attempt also rewrites every older chunk holding that
image under a new chunk id, without the image's rows and with the image's stats subtracted, in
the same manifest write. So at every commit point each image's rows live in exactly one chunk,
and the merged stats still reconcile. The old attempt's cost is kept under ``redone``.
"""

from __future__ import annotations

import json
import os
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zwz_ray.config import ConfigError
from zwz_ray.synth.accounting import merge_stats, model_calls, subtract_stats
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

    def finished_sources(self, max_attempts: int = 1) -> set[str]:
        """Committed images, less those with a retryable drop that have had fewer than ``max_attempts`` runs."""
        return {s for e in self.entries() for s in e["sources"]
                if s not in e.get("retry", {}) or e["retry"][s]["attempt"] >= max_attempts}

    def attempts(self) -> dict[str, int]:
        """Runs made so far of every committed image that has a retryable drop."""
        return {s: r["attempt"] for e in self.entries() for s, r in e.get("retry", {}).items()}

    def merged_stats(self) -> dict:
        total: dict = {}
        for entry in self.entries():
            total = merge_stats(total, entry["stats"])
        return total

    def retry_stats(self, max_attempts: int) -> dict:
        """Images waiting for another attempt, images whose retryable drops became final, what redone attempts cost."""
        retry = {s: r["attempt"] for e in self.entries() for s, r in e.get("retry", {}).items()}
        redone: dict = {}
        for entry in self.entries():
            redone = merge_stats(redone, entry.get("redone", {}))
        return {"images_pending": sum(1 for a in retry.values() if a < max_attempts),
                "images_final_after_max_attempts": sum(1 for a in retry.values() if a >= max_attempts),
                "max_attempts": max_attempts,
                "redone": {"images": 0, "rows_replaced": 0, "retryable_drops_replaced": 0, "model_calls_replaced": 0, **redone}}

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
        """Publish the chunk's kept file and drops, then append its manifest line (the commit point).

        Older chunks holding an image this chunk redid are rewritten without it (new files, new id)
        and swapped in by the same manifest write; their old files are deleted after it."""
        for folder in ("kept", "drops", "_staging"):
            self.fs.makedirs(self.path(folder), exist_ok=True)
        if staged_kept is not None:
            self.fs.mv(staged_kept, self.path("kept", f"{chunk}.parquet"))
        self._write_parquet(drops, self.path("drops", f"{chunk}.parquet"))
        redone = set(entry["sources"])
        entries, replaced, totals = [], [], {"images": 0, "rows_replaced": 0, "retryable_drops_replaced": 0, "model_calls_replaced": 0}
        for old in self.entries():
            hit = redone & set(old["sources"])
            if not hit:
                entries.append(old)
                continue
            replaced.append(old["chunk"])
            rest = self._without(old, hit)
            if rest["sources"]:
                entries.append(rest)
            else:  # the chunk is gone; what its own redos replaced stays on record
                totals = merge_stats(totals, old.get("redone", {}))
            gone = {}
            for source in hit:  # every redone image had a retry record with its stats
                gone = merge_stats(gone, old["retry"][source]["stats"])
            totals = merge_stats(totals, {"images": len(hit), "rows_replaced": gone["kept_rows"] + gone["drop_rows"],
                                          "retryable_drops_replaced": gone.get("retryable_drops", 0),
                                          "model_calls_replaced": model_calls(gone)})
        if replaced:
            entry = {**entry, "redone": totals}
        lines = [json.dumps(e, sort_keys=True) for e in [*entries, {**entry, "chunk": chunk}]]
        self.write_text(MANIFEST, "\n".join(lines) + "\n")
        for old_chunk in replaced:  # leftovers if this is interrupted: clean_uncommitted removes them
            for folder in ("kept", "drops"):
                if self.fs.exists(self.path(folder, f"{old_chunk}.parquet")):
                    self.fs.rm(self.path(folder, f"{old_chunk}.parquet"))

    def _without(self, old: dict, sources: set[str]) -> dict:
        """``old`` rewritten under a new chunk id without the rows of ``sources`` (its files, its stats)."""
        chunk = f"{old['chunk'].split('_')[0]}_r{uuid.uuid4().hex[:8]}"
        for folder, column in (("kept", "source_image"), ("drops", "source")):
            path = self.path(folder, f"{old['chunk']}.parquet")
            if self.fs.exists(path):
                with self.fs.open(path, "rb") as fh:
                    table = pq.read_table(fh)
                keep = pc.invert(pc.is_in(table[column], value_set=pa.array(sorted(sources), pa.string())))
                self._write_parquet(table.filter(keep), self.path(folder, f"{chunk}.parquet"))
        stats = old["stats"]
        for source in sources:
            stats = subtract_stats(stats, old["retry"][source]["stats"])
        return {**old, "chunk": chunk, "sources": [s for s in old["sources"] if s not in sources], "stats": stats,
                "retry": {s: r for s, r in old.get("retry", {}).items() if s not in sources}}

    def _write_parquet(self, table: pa.Table, path: str) -> None:
        """Write through a staging file and a move, so a failed write leaves no half file under kept/ or drops/."""
        staged = self.path("_staging", f"{uuid.uuid4().hex}.parquet")
        with self.fs.open(staged, "wb") as fh:
            pq.write_table(table, fh)
        self.fs.mv(staged, path)

    def write_text(self, name: str, text: str) -> None:
        """Replace ``name`` atomically (rename locally, a single PUT on object stores)."""
        atomic_write(display(self.fs, self.path(name)), text)

    def _ls(self, path: str) -> list[str]:
        if not self.fs.exists(path):
            return []
        return [p for p in self.fs.find(path) if not self.fs.isdir(p)]
