"""``run_synthesis(cfg)``: the whole job as ONE streaming Ray Data execution, committed in chunks.

Model actor pools start once per run. The driver reads the finished rows as they stream out,
groups them by source image and knows when an image is complete (fan-out counts
``n_objects`` / ``n_questions``). Every ``output.chunk_size`` complete images are committed:
kept rows (streamed into a parquet file as they come), drops, stats and a manifest line.
A rerun of the same config skips the images of committed chunks, so it spends no model call
on them and writes no duplicate row; the images of a chunk that was not committed are redone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from zwz_ray.logs import get_logger
from zwz_ray.synth.accounting import compute_stats, drop_reasons, merge_stats, model_calls, reconcile
from zwz_ray.synth.columns import SMALL_COLUMNS, SMALL_SCHEMA, drops_table, image_complete, output_table, to_table
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.plan import SynthesisPlan, build_synthesis
from zwz_ray.synth.stages import select_images
from zwz_ray.synth.store import STATS, OutputStore

log = get_logger(__name__)


@dataclass
class SynthResult:
    output_dir: str
    stats: dict  # everything output.dir holds (all committed chunks)
    run: dict = field(default_factory=dict)  # what this call did

    @property
    def kept_rows(self) -> int:
        return self.stats.get("kept_rows", 0)

    @property
    def drop_rows(self) -> int:
        return self.stats.get("drop_rows", 0)

    def top_drop_reasons(self, n: int = 5) -> list[tuple[str, int]]:
        return drop_reasons(self.stats).most_common(n) if self.stats.get("stages") else []

    def summary(self) -> str:
        images = self.stats.get("images", {})
        lines = [
            f"kept rows: {self.kept_rows} from {images.get('with_kept_rows', 0)} of {images.get('in', 0)} images "
            f"({self.drop_rows} drops)",
            f"this run: {self.run.get('images', 0)} images in {self.run.get('chunks', 0)} chunks, "
            f"{self.run.get('skipped_images', 0)} already done, {self.run.get('model_calls', 0)} model calls, "
            f"{self.run.get('wall_s', 0):.1f}s",
        ]
        if self.top_drop_reasons():
            lines.append("top drop reasons: " + ", ".join(f"{k} {v}" for k, v in self.top_drop_reasons()))
        lines.append(f"output: {self.output_dir} (kept/, drops/, stats.json)")
        return "\n".join(lines)


class ChunkWriter:
    """Collects complete images; kept rows go straight to a staged parquet file."""

    def __init__(self, plan: SynthesisPlan, store: OutputStore):
        self.plan, self.store = plan, store
        self.chunk = store.new_chunk_id()
        self.sources: list[str] = []
        self.small: list[dict] = []
        self.staged: str | None = None
        self._fh = self._writer = None

    def add(self, source: str, rows: list[dict]) -> None:
        self.sources.append(source)
        self.small.extend({k: r[k] for k in SMALL_COLUMNS} for r in rows)
        kept = output_table(to_table(rows))
        if kept.num_rows:
            if self._writer is None:
                self.staged = self.store.staging_path(self.chunk)
                self._fh = self.store.fs.open(self.staged, "wb")
                self._writer = pq.ParquetWriter(self._fh, kept.schema)
            self._writer.write_table(kept)

    def commit(self) -> dict:
        if self._writer is not None:
            self._writer.close()
            self._fh.close()
        stats = compute_stats(self.small, self.plan.levels(), self.sources)
        problems = reconcile(stats)
        if problems:
            log.error("chunk %s: accounting does not reconcile: %s", self.chunk, problems)
        drops = drops_table(pa.Table.from_pylist(self.small, schema=SMALL_SCHEMA))
        entry = {"sources": self.sources, "config_hash": self.plan.config_hash, "stats": stats, "problems": problems}
        self.store.commit(self.chunk, self.staged, drops, entry)
        log.info("chunk %s committed: %d images, %d kept rows, %d drops", self.chunk, len(self.sources),
                 stats["kept_rows"], stats["drop_rows"])
        return stats


def run_synthesis(cfg: SynthConfig) -> SynthResult:
    """Synthesize R2I rows for ``cfg.input`` into ``cfg.output.dir``; resumes a killed run."""
    start = time.perf_counter()
    sources = select_images(cfg)  # missing paths fail here, before Ray starts
    plan = build_synthesis(cfg)
    store = OutputStore(cfg.output.dir)
    if cfg.output.overwrite:
        store.reset()
    store.check_config(plan.config_hash)
    store.clean_uncommitted()
    done = store.finished_sources()
    todo = [s for s in sources if s not in done]
    log.info("%d images selected, %d already done, %d to process", len(sources), len(sources) - len(todo), len(todo))
    this_run, chunks = stream(plan, store, todo, cfg.output.chunk_size) if todo else ({}, 0)
    run = {"images": len(todo), "chunks": chunks, "skipped_images": len(sources) - len(todo),
           "model_calls": model_calls(this_run), "wall_s": round(time.perf_counter() - start, 3)}
    stats = finish_stats(plan, store.merged_stats(), run)
    store.write_text(STATS, json.dumps(stats, indent=2) + "\n")
    return SynthResult(cfg.output.dir, stats, run)


def stream(plan: SynthesisPlan, store: OutputStore, sources: list[str], chunk_size: int) -> tuple[dict, int]:
    """Run every image through the stages once; commit each ``chunk_size`` complete images."""
    pending: dict[str, list[dict]] = {}
    writer, total, chunks = ChunkWriter(plan, store), {}, 0
    ds = plan.dataset_from_sources(sources, include_drops=True)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            rows = pending.setdefault(row["source"], [])
            rows.append(row)
            if image_complete(rows):
                writer.add(row["source"], pending.pop(row["source"]))
            if len(writer.sources) >= chunk_size:
                total, chunks = merge_stats(total, writer.commit()), chunks + 1
                writer = ChunkWriter(plan, store)
    if pending:  # cannot happen when every stage keeps its fan-out counts; never lose the rows
        log.error("%d images ended the stream incomplete; committing them as they are", len(pending))
        for source, rows in pending.items():
            writer.add(source, rows)
    if writer.sources:
        total, chunks = merge_stats(total, writer.commit()), chunks + 1
    return total, chunks


def finish_stats(plan: SynthesisPlan, merged: dict, run: dict) -> dict:
    if not merged:
        merged = {"images": {"in": 0, "with_kept_rows": 0, "fully_dropped": 0}, "kept_rows": 0, "drop_rows": 0,
                  "stages": {}, "models": {}}
    ordered = {name: merged["stages"][name] for name in plan.names() if name in merged["stages"]}
    ordered.update({k: v for k, v in merged["stages"].items() if k not in ordered})
    merged = {**merged, "stages": ordered}
    return {
        "config_hash": plan.config_hash,
        "images": merged["images"],
        "kept_rows": merged["kept_rows"],
        "drop_rows": merged["drop_rows"],
        "stages": ordered,
        "models": merged["models"],
        "drop_reasons": dict(drop_reasons(merged).most_common()),
        "reconciliation_problems": reconcile(merged) if ordered else [],
        "this_run": run,
    }
