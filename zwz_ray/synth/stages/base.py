"""The base of every synthesis stage: a Ray Data ``map_batches`` callable over ROW_SCHEMA tables.

A stage declares the columns it ``reads`` and ``writes`` and the unit level of the rows it
takes and gives (0 image, 1 object, 2 question). :meth:`Stage.__call__` checks the columns,
passes dropped rows through untouched, hands the live rows to :meth:`Stage.process` (one list
of output rows per input row: the row itself, its children, or the row marked dropped) and
books the call's cost on the first output row. Model stages (:class:`ModelStage`) build their
engine in ``__init__`` (:func:`zwz_ray.engines.connect`) and Ray Data runs them as actor pools:
with served models (``served``: the plan's running Ray Serve deployments) the engine is a light
client of the model's one deployment, otherwise the actor loads the model itself. A stage only
talks to its engine through ``chat``, so either way no stage changes.

A failed model call drops its row as ``engine_error`` and a crash as ``stage_error``; both are
marked retryable (``columns.retryable``) so that a rerun tries the image again. A model stage
also keeps a :class:`Breaker`: when too many of its actor's recent calls failed it raises
:class:`CircuitOpenError`, which escapes the per-row fallback and stops the job.

Also here: the seeds every stage derives (:func:`stable_seed`) and the building blocks of the
stages' output schemas.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict, deque
from typing import Any, ClassVar

import pyarrow as pa
from PIL import Image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, ChatResult, Engine, Grammar, SamplingParams, parse_json
from zwz_ray.images import ImageDecodeError, decode_image, fit_pixels, read_bytes
from zwz_ray.logs import get_logger
from zwz_ray.synth.accounting import COUNTERS, add_usage, stats_delta
from zwz_ray.synth.columns import ALL_COLUMNS, drop, is_dropped, retryable, to_rows, to_table

log = get_logger(__name__)

IMAGE, OBJECT, QUESTION = 0, 1, 2


class CircuitOpenError(RuntimeError):
    """A model failed too often over the breaker window: the job stops instead of feeding it more work."""


class MissingColumnsError(KeyError):
    """A batch lacks columns a stage reads (the stages are in the wrong order, or the input is not ROW_SCHEMA)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Stage(ABC):
    """One paper step as a ``map_batches`` callable (pyarrow batches in and out)."""

    name: ClassVar[str] = "stage"
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    level_in: ClassVar[int] = IMAGE
    level_out: ClassVar[int] = IMAGE

    def __init__(self, *, name: str | None = None):
        self.stage_name = name or type(self).name
        self._flags: Counter[str] = Counter()
        self._booked_once = False

    # ------------------------------------------------------------------ to override

    @abstractmethod
    def process(self, rows: list[dict]) -> list[list[dict]]:
        """Live rows in; for each, the rows it becomes (itself updated, its children, or itself dropped)."""

    def counters(self) -> dict[str, dict[str, int]]:
        """Cumulative cost counters per model label (engines by default)."""
        return {label: engine.stats.as_dict() for label, engine in self.engines().items()}

    def engines(self) -> dict[str, Engine]:
        return {}

    # ------------------------------------------------------------------ the map_batches entry point

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not isinstance(batch, pa.Table):
            batch = pa.Table.from_pandas(batch) if hasattr(batch, "to_dict") else pa.table(batch)
        check_columns(self, batch.column_names)
        self._flags = Counter()
        start = time.perf_counter()
        before = self.counters()
        if not self._booked_once:  # the first call books the model loads of building the stage's engines
            before = {label: {**counts, "loads": 0} for label, counts in before.items()}
            self._booked_once = True
        rows = [{**dict.fromkeys(ALL_COLUMNS), **row} for row in to_rows(batch)]
        passed = [is_dropped(row) for row in rows]  # decided before process() marks new drops
        live = [row for row, done in zip(rows, passed) if not done]
        results = iter(self._process_safely(live) if live else [])
        out: list[dict] = []
        for row, done in zip(rows, passed):
            out.extend([row] if done else next(results))
        self._book(out, before, time.perf_counter() - start)
        return to_table(out)

    def _book(self, out: list[dict], before: dict, busy_s: float) -> None:
        after = self.counters()
        models = {label: stats_delta(before.get(label, {}), counts) for label, counts in after.items()}
        models = {label: d for label, d in models.items() if any(d[k] for k in COUNTERS)}
        if out:
            out[0]["usage"] = add_usage(out[0].get("usage"), self.stage_name, busy_s, models, dict(self._flags))

    def _process_safely(self, rows: list[dict]) -> list[list[dict]]:
        """``process``; if it raises, retry row by row and drop only the rows that still fail."""
        try:
            return self._checked(rows, self.process(rows))
        except CircuitOpenError:
            raise  # the model is down: stop the job, do not turn every row into a drop
        except Exception as exc:  # noqa: BLE001 - bad data must not kill the job
            if len(rows) == 1:
                log.warning("stage %s failed on %s: %s", self.stage_name, rows[0].get("source"), exc)
                detail = f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=3)[-300:]}"
                return [[drop(rows[0], self.stage_name, "stage_error", detail)]]
            log.warning("stage %s failed on a batch of %d rows (%s); retrying row by row", self.stage_name, len(rows), exc)
            return [[row] if is_dropped(row) else self._process_safely([row])[0] for row in rows]

    def _checked(self, rows: list[dict], results: list[list[dict]]) -> list[list[dict]]:
        if len(results) != len(rows) or any(not r for r in results):
            raise RuntimeError(f"stage {self.stage_name} returned {len(results)} results for {len(rows)} rows")
        return results

    def drop(self, row: dict, reason: str, detail: str = "") -> dict:
        return drop(row, self.stage_name, reason, detail)

    def flag(self, name: str, count: int = 1) -> None:
        """Count an event on a row that is NOT dropped (e.g. a judge reply not trusted; ``count`` at once,
        e.g. samples not drawn); stats.json shows the sum per stage under ``flags``."""
        self._flags[name] += count


def check_columns(stage: Stage, present: list[str]) -> None:
    missing = [c for c in stage.reads if c not in present]
    if missing:
        raise MissingColumnsError(
            f"stage {stage.stage_name!r} reads columns {missing} that the batch lacks (it has {sorted(present)})"
        )


def loosen(schema: object) -> object:
    """``schema`` without length bounds: they exist to bound constrained decoding, and a reply
    a few characters over (decoders and jsonschema count characters differently) is still usable."""
    if isinstance(schema, dict):
        return {k: loosen(v) for k, v in schema.items() if k not in ("maxLength", "maxItems")}
    if isinstance(schema, list):
        return [loosen(v) for v in schema]
    return schema


def parse_reply(text: str, schema: dict) -> tuple[Any | None, str | None]:
    """The reply's JSON value if it has the schema's shape (types, required keys, enums)."""
    return parse_json(text, loosen(schema))


def sampling(cfg: Any, seed: int, n: int = 1) -> SamplingParams:
    """``n`` samples with a stage config's ``temperature``, ``top_p`` and ``max_tokens``."""
    return SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed)


def stable_seed(*parts: object, base_seed: int = 0) -> int:
    """A 63-bit seed from ``parts`` that is the same in every process (blake2b, not ``hash()``)."""
    text = "\x1f".join([str(base_seed), *map(str, parts)])
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def source_key(source: str) -> str:
    """What seeds know of an image: its file name, not the folder it lies in, so that the same images give the
    same rows wherever they are (a moved folder, another machine, ``ray job submit`` unpacking the working
    directory under a new path). Two images of one name in different folders share seeds; their prompts differ."""
    return source.rstrip("/").rsplit("/", 1)[-1]


def row_seed(base: int, stage: str, row: dict) -> int:
    """A per-row sampling seed, the same in every process, on every rerun and wherever the image lies."""
    return stable_seed(stage, source_key(row["source"]), row["object_index"], row["question_index"], base_seed=base) % (2**31)


# --------------------------------------------------------------------------- full images


class SourceImages:
    """Decoded full images by source URI, re-read when needed (rows carry no full-size pixels).

    The cache is shared by every stage in a worker process (fused CPU stages, later batches of
    the same image) and holds only a few images.
    """

    KEEP = 3
    _cache: OrderedDict[tuple, Image.Image] = OrderedDict()

    def __init__(self, max_bytes: int, max_pixels: int):
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    def load(self, source: str) -> Image.Image:
        key = (source, self.max_bytes, self.max_pixels)
        cache = SourceImages._cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        return self.remember(source, decode_image(read_bytes(source, self.max_bytes), max_pixels=self.max_pixels))

    def remember(self, source: str, image: Image.Image) -> Image.Image:
        cache = SourceImages._cache
        cache[(source, self.max_bytes, self.max_pixels)] = image
        while len(cache) > self.KEEP:
            cache.popitem(last=False)
        return image

    def load_for(self, stage: Stage, row: dict) -> Image.Image | None:
        """The row's full image, or None with the row dropped as ``source_unreadable``."""
        try:
            return self.load(row["source"])
        except ImageDecodeError as exc:
            stage.drop(row, "source_unreadable", str(exc))
            return None


# --------------------------------------------------------------------------- model stages


class Breaker:
    """The error share of one actor's last ``window`` model calls (per actor: no shared state, no extra
    round trip; with N actors on one dead endpoint each trips after its own ``window`` calls)."""

    def __init__(self, label: str, window: int, share: float):
        self.label, self.share = label, share
        self.outcomes: deque[bool] = deque(maxlen=window)
        self.last_error = ""

    def record(self, stage: str, results: list[ChatResult]) -> None:
        for result in results:
            # Only failures of the infrastructure count; a refused request says nothing about the endpoint.
            failed = bool(result.error) and retryable("engine_error", result.error)
            self.outcomes.append(failed)
            self.last_error = result.error if failed else self.last_error
        window = self.outcomes.maxlen
        errors = sum(self.outcomes)
        if len(self.outcomes) == window and errors > self.share * window:
            raise CircuitOpenError(
                f"circuit breaker: model {self.label!r} failed {errors} of its last {window} calls in stage {stage!r} "
                f"(reliability.breaker_error_share={self.share}); last error: {self.last_error}. "
                "Committed chunks are kept; rerun when the model is healthy.")


class ModelStage(Stage):
    """A stage that asks one engine; the engine is built in ``__init__`` (once per actor)."""

    def __init__(self, engine_config: EngineConfig, *, engine: Engine | None = None, name: str | None = None,
                 reliability: Any = None, served: dict | None = None):
        super().__init__(name=name)
        from zwz_ray.engines import connect

        self.engine_config = engine_config
        self.served = served or {}
        self.engine = engine if engine is not None else connect(engine_config, self.served)
        self.breaker = None
        if reliability is not None and reliability.breaker_error_share < 1:
            self.breaker = Breaker(engine_config.label, reliability.breaker_window, reliability.breaker_error_share)

    def engines(self) -> dict[str, Engine]:
        return {self.engine_config.label: self.engine}

    def fit(self, image: Any) -> Any:
        """Shrink an image to the engine's pixel budget before it is sent (less to move and encode)."""
        limit = self.engine_config.max_pixels
        if limit and isinstance(image, Image.Image) and image.width * image.height > limit:
            return fit_pixels(image, 1, limit)
        return image

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        results = self.engine.chat(requests) if requests else []
        if self.breaker is not None:
            self.breaker.record(self.stage_name, results)
        return results

    def reply(self, row: dict, result: ChatResult, schema: dict) -> Any | None:
        """The first sample parsed against ``schema``; on failure the row is dropped with the reason."""
        if result.error:
            self.drop(row, "engine_error", result.error)
            return None
        value, why = parse_reply(result.texts[0] if result.texts else "", schema)
        if value is None:
            self.drop(row, "unparseable_output", why or "empty reply")
        return value

    def seed(self, row: dict) -> int:
        return row_seed(self.engine_config.seed, self.stage_name, row)


# --------------------------------------------------------------------------- output schemas
#
# Every string is bounded by ``maxLength`` (or an ``enum``) and every array by ``maxItems``, so
# constrained decoding (xgrammar) always terminates, even for a random-weight model. Properties are
# listed in the order the model should write them: reasoning before verdicts.


def json_object(**props: dict) -> dict:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def bounded_string(max_len: int, min_len: int = 1) -> dict:
    return {"type": "string", "minLength": min_len, "maxLength": max_len}


def bounded_array(items: dict, max_items: int, min_items: int = 0) -> dict:
    return {"type": "array", "items": items, "minItems": min_items, "maxItems": max_items}


def yes_no() -> dict:
    return {"type": "string", "enum": ["Yes", "No"]}


# --------------------------------------------------------------------------- reply frames
#
# The paper's teachers and student write free text: reasoning, then a final answer in \boxed{} (or a
# "VALID: Yes/No" line). A random-weight model never closes free text on its own, so a stage may
# instead constrain only the FRAME of the reply with an EBNF grammar: bounded reasoning (no
# backslash or braces, so it cannot open a box early), then the boxes. The reply is read the same way
# in both cases.

def _literal_class(max_chars: int, min_chars: int = 0) -> str:
    return f"[^\\\\{{}}]{{{min_chars},{max_chars}}}"


def boxed_frame(reasoning_chars: int, answer_chars: int, boxes: int = 1, answer: str | None = None) -> Grammar:
    """Up to ``reasoning_chars`` of reasoning, then ``boxes`` lines ``\\boxed{...}``.

    Each box holds 1..``answer_chars`` characters without braces or newlines, or, with ``answer``, one
    of an EBNF alternative (e.g. ``"A" | "B"``).
    """
    content = f"({answer})" if answer else f"[^{{}}\\n]{{1,{answer_chars}}}"
    box = '"\\\\boxed{" content "}"'
    body = ' "\\n" '.join([box] * boxes)
    return Grammar.ebnf(f"root ::= reasoning {body}\nreasoning ::= {_literal_class(reasoning_chars)}\ncontent ::= {content}")


def verdict_frame(reasoning_chars: int, prefix: str = "VALID:") -> Grammar:
    """Up to ``reasoning_chars`` of reasoning (at least one character), then ``VALID: Yes`` or ``VALID: No``."""
    return Grammar.ebnf(f'root ::= reasoning "\\n{prefix} " ("Yes" | "No")\nreasoning ::= [^\\n]{{1,{reasoning_chars}}}')


def frame_of(cfg: Any, grammar: Grammar) -> Grammar | None:
    """``grammar`` when the stage config's ``frame`` asks for a constrained frame, None for ``free`` text."""
    return None if cfg.frame == "free" else grammar
