"""``run_synthesis(cfg)``: the whole job as ONE streaming Ray Data execution, committed in chunks.

Each model starts once per run: one Ray Serve deployment per model (``serving.mode: serve``), deleted
when the run ends, also on an error or Ctrl-C; or one actor pool per stage (``actors``). The driver reads the finished rows as they stream out,
groups them by source image and knows when an image is complete (fan-out counts
``n_objects`` / ``n_questions``). Every ``output.chunk_size`` complete images are committed:
kept rows (streamed into a parquet file as they come), drops, stats and a manifest line.
A rerun of the same config skips the images of committed chunks, so it spends no model call
on them and writes no duplicate row; the images of a chunk that was not committed are redone.
Images whose rows hold a retryable drop are redone too, up to ``reliability.max_attempts`` runs
(see ``store``). When a model's circuit breaker opens, the complete images are committed and the
job stops with the breaker's message.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from zwz_ray.logs import get_logger
from zwz_ray.progress import Progress
from zwz_ray.synth.accounting import compute_stats, drop_reasons, merge_stats, model_calls, reconcile
from zwz_ray.synth.columns import SMALL_COLUMNS, SMALL_SCHEMA, drops_table, image_complete, is_dropped, output_table, to_table
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.cost import cost_line, cost_per_kept_row, model_gpus, not_metered
from zwz_ray.synth.plan import SynthesisPlan, build_synthesis
from zwz_ray.synth.stages import select_images
from zwz_ray.synth.stages.base import CircuitOpenError
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
        if cost := cost_line(self.stats.get("cost_per_kept_row")):
            lines.append(cost)
        if self.top_drop_reasons():
            lines.append("top drop reasons: " + ", ".join(f"{k} {v}" for k, v in self.top_drop_reasons()))
        lines.append(f"output: {self.output_dir} (kept/, drops/, stats.json)")
        return "\n".join(lines)


class ChunkWriter:
    """Collects complete images; kept rows go straight to a staged parquet file."""

    def __init__(self, plan: SynthesisPlan, store: OutputStore, attempts: dict[str, int] | None = None):
        self.plan, self.store = plan, store
        self.attempts = attempts or {}  # runs made so far of images being redone
        self.chunk = store.new_chunk_id()
        self.sources: list[str] = []
        self.small: list[dict] = []
        self.retry: dict[str, dict] = {}
        self.redo: list[dict] = []  # small rows of redone images, for what the redo spent
        self.staged: str | None = None
        self._fh = self._writer = None

    def add(self, source: str, rows: list[dict]) -> None:
        self.sources.append(source)
        small = [{k: r.get(k) for k in SMALL_COLUMNS} for r in rows]
        self.small.extend(small)
        attempt = self.attempts.get(source, 0) + 1
        if any(r["drop_retryable"] for r in small):
            # The image's own stats, so that a later attempt can take them out of this chunk's.
            stats = compute_stats(small, self.plan.levels(), [source])
            self.retry[source] = {"attempt": attempt, "stats": stats}
        if source in self.attempts:
            self.redo.extend(small)
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
        attempts = {s: self.attempts.get(s, 0) + 1 for s in self.sources}
        drops = drops_table(pa.Table.from_pylist(self.small, schema=SMALL_SCHEMA), attempts)
        entry = {"sources": self.sources, "config_hash": self.plan.config_hash, "stats": stats, "problems": problems,
                 "retry": self.retry}
        redone = [s for s in self.sources if s in self.attempts]
        if redone:
            spent = compute_stats(self.redo, self.plan.levels(), redone)
            entry["redo_spent"] = {"images": len(redone), "rows": len(self.redo), "model_calls": model_calls(spent)}
        self.redo_spent = entry.get("redo_spent", {})
        self.store.commit(self.chunk, self.staged, drops, entry)
        log.info("chunk %s committed: %d images, %d kept rows, %d drops", self.chunk, len(self.sources),
                 stats["kept_rows"], stats["drop_rows"])
        return stats


def run_synthesis(cfg: SynthConfig) -> SynthResult:
    """Synthesize R2I rows for ``cfg.input`` into ``cfg.output.dir``; resumes a killed run."""
    from zwz_ray.preflight import check_synthesis

    start = time.perf_counter()
    check_synthesis(cfg)  # every path, model directory and the output folder, before Ray starts
    sources = select_images(cfg)
    plan = build_synthesis(cfg)
    store = OutputStore(cfg.output.dir)
    if cfg.output.overwrite:
        store.reset()
    store.check_config(plan.config_hash)
    store.clean_uncommitted()
    max_attempts = cfg.reliability.max_attempts
    done = store.finished_sources(max_attempts)
    attempts = {s: n for s, n in store.attempts().items() if s not in done}
    todo = [s for s in sources if s not in done]
    log.info("%d images selected, %d already done, %d to process (%d of them again after a retryable drop)",
             len(sources), len(sources) - len(todo), len(todo), sum(1 for s in todo if s in attempts))
    tally = RunTally()
    try:
        if todo:
            with plan.serving():  # each model one Ray Serve deployment, deleted again when the stream ends
                stream(plan, store, todo, cfg.output.chunk_size, attempts, tally)
    finally:  # also after an open circuit breaker: stats.json describes what was committed
        run = {"images": len(todo), "chunks": tally.chunks, "skipped_images": len(sources) - len(todo),
               "model_calls": model_calls(tally.stats), "redo": tally.redo,
               "wall_s": round(time.perf_counter() - start, 3)}
        stats = finish_stats(plan, store.merged_stats(), run)
        stats["retries"] = store.retry_stats(max_attempts)
        store.write_text(STATS, json.dumps(stats, indent=2) + "\n")
    return SynthResult(cfg.output.dir, stats, run)


@dataclass
class RunTally:
    """What the committed chunks of this run hold and cost."""

    stats: dict = field(default_factory=dict)
    chunks: int = 0
    redo: dict = field(default_factory=lambda: {"images": 0, "rows": 0, "model_calls": 0})

    def add(self, writer: ChunkWriter) -> None:
        self.stats = merge_stats(self.stats, writer.commit())
        self.chunks += 1
        self.redo = merge_stats(self.redo, writer.redo_spent)


def stream(plan: SynthesisPlan, store: OutputStore, sources: list[str], chunk_size: int,
           attempts: dict[str, int], tally: RunTally) -> None:
    """Run every image through the stages once; commit each ``chunk_size`` complete images.

    When a model's circuit breaker opens, the complete images are committed before the error goes on."""
    pending: dict[str, list[dict]] = {}
    writer, kept, drops = ChunkWriter(plan, store, attempts), 0, 0
    ds = plan.dataset_from_sources(sources, include_drops=True)
    progress = Progress("synthesis", "images", len(sources))
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                rows = pending.setdefault(row["source"], [])
                rows.append(row)
                if image_complete(rows):
                    done = pending.pop(row["source"])
                    writer.add(row["source"], done)
                    n_kept = sum(1 for r in done if not is_dropped(r))
                    kept, drops = kept + n_kept, drops + len(done) - n_kept
                    progress.update(1, **{"kept rows": kept, "drops": drops})
                if len(writer.sources) >= chunk_size:
                    tally.add(writer)
                    writer = ChunkWriter(plan, store, attempts)
        progress.finish()
    except Exception as exc:
        breaker = circuit_error(exc)
        if breaker is None:
            raise
        if writer.sources:
            tally.add(writer)
        log.error("%s", breaker)
        raise breaker from None
    finally:
        progress.close()
    if pending:  # cannot happen when every stage keeps its fan-out counts; never lose the rows
        log.error("%d images ended the stream incomplete; committing them as they are", len(pending))
        for source, rows in pending.items():
            writer.add(source, rows)
    if writer.sources:
        tally.add(writer)


def circuit_error(exc: BaseException) -> CircuitOpenError | None:
    """The breaker's error inside what Ray raised (a task error wraps the stage's exception)."""
    for _ in range(10):
        text = str(exc)
        if isinstance(exc, CircuitOpenError) or "circuit breaker: model" in text:
            return CircuitOpenError(text[text.find("circuit breaker: model"):].split("\n")[0])
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else exc.__cause__ or exc.__context__
        if exc is None:
            return None
    return None


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
        "retryable_drops": merged.get("retryable_drops", 0),
        "stages": ordered,
        "models": merged["models"],
        "cost_per_kept_row": cost_per_kept_row(merged, model_gpus(plan.config), not_metered(plan.config)),
        "drop_reasons": dict(drop_reasons(merged).most_common()),
        "reconciliation_problems": reconcile(merged) if ordered else [],
        "this_run": run,
    }
