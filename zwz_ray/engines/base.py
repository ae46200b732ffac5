"""One interface for every model call: chat messages with images, n samples, structured output.

Backends (``hf``, ``vllm``, ``openai``) implement :class:`Engine`. A stage builds its
requests, calls :meth:`Engine.chat` once per batch and gets one :class:`ChatResult` per
request, in order. Per-request failures (a timeout, an HTTP 500, an over-long prompt)
come back as ``ChatResult.error`` so the stage can record a drop reason; only
configuration mistakes raise.
"""

from __future__ import annotations

import io
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from zwz_ray.config import EngineConfig


@dataclass
class SamplingParams:
    """How to draw the samples of one request; every backend honours every field.

    ``top_k``: keep the k most likely tokens (None, 0 or -1 = off). ``presence_penalty``: subtracted
    once from the logit of every token already in the generated text (0 = off; OpenAI's definition).
    ``repetition_penalty``: divides positive / multiplies negative logits of every token seen in the
    prompt or the generated text (1.0 = off; the CTRL / transformers / vLLM definition).
    """

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    top_k: int | None = None
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < -1):
            raise ValueError(f"top_k must be None, -1 or 0 (off) or a positive integer, got {self.top_k!r}")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise ValueError(f"presence_penalty must be in [-2, 2] (0 = off), got {self.presence_penalty}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            raise ValueError(f"repetition_penalty must be a finite number > 0 (1.0 = off), got {self.repetition_penalty}")

    @property
    def top_k_or_none(self) -> int | None:
        """``top_k`` when it limits the choice, None when it is off."""
        return self.top_k if self.top_k is not None and self.top_k > 0 else None


@dataclass(frozen=True)
class Grammar:
    """A decoding constraint written as a grammar: ``kind`` is ``"ebnf"`` (xgrammar / GBNF EBNF, root
    rule ``root``) or ``"regex"``; the whole reply must match ``text``.

    Use it for reply frames JSON cannot express, e.g. bounded free reasoning then ``\\boxed{...}``,
    or a tool call. :meth:`check` parses it without a tokenizer, to catch a bad grammar at start-up.
    """

    kind: Literal["ebnf", "regex"]
    text: str

    def __post_init__(self):
        if self.kind not in ("ebnf", "regex"):
            raise ValueError(f"grammar kind must be 'ebnf' or 'regex', got {self.kind!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"the {self.kind} grammar is empty")

    @classmethod
    def ebnf(cls, text: str) -> Grammar:
        return cls("ebnf", text)

    @classmethod
    def regex(cls, text: str) -> Grammar:
        return cls("regex", text)

    def check(self) -> Grammar:
        """Parse the grammar with xgrammar; raise ValueError naming the problem. Returns self."""
        import xgrammar as xgr

        try:
            xgr.Grammar.from_ebnf(self.text) if self.kind == "ebnf" else xgr.Grammar.from_regex(self.text)
        except Exception as exc:  # xgrammar raises RuntimeError with the parser's message
            raise ValueError(f"bad {self.kind} grammar: {exc}") from None
        return self


@dataclass
class ChatRequest:
    """One conversation to complete.

    ``messages`` follow the OpenAI shape: ``{"role": ..., "content": str | list[part]}`` where a
    part is ``{"type": "text", "text": str}`` or ``{"type": "image", "image": PIL.Image | bytes}``.
    At most one output constraint: ``json_schema`` asks for output that parses as JSON matching the
    schema, ``grammar`` for output that matches an EBNF grammar or a regex. With
    ``structured_output: off`` a schema is described in words and a grammar is dropped (the prompt
    is expected to describe its frame already).
    """

    messages: list[dict]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    json_schema: dict | None = None
    request_id: str = ""
    grammar: Grammar | None = None

    def __post_init__(self):
        if self.json_schema is not None and self.grammar is not None:
            raise ValueError(f"request {self.request_id!r}: give json_schema or grammar, not both (one output constraint per request)")
        if self.grammar is not None and not isinstance(self.grammar, Grammar):
            raise TypeError(f"request {self.request_id!r}: grammar must be a Grammar, got {type(self.grammar).__name__}")


@dataclass
class ChatResult:
    texts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    # This request's share of the engine call that served it (the call's wall time over its requests),
    # in seconds; times the GPUs of one replica it gives the GPU-seconds the request cost.
    engine_s: float = 0.0
    # 1 on the first result a served deployment replica hands back after loading its model, so that its
    # clients count the load where they book their results (a local engine counts its load in its stats).
    loads: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class EngineStats:
    calls: int = 0  # requests sent to the model (a request may carry n samples)
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    loads: int = 0  # model loads: 1 for an engine that loaded its model here, or the loads its replicas reported
    engine_s: float = 0.0  # engine seconds spent on these calls (see ChatResult.engine_s)

    def add(self, result: ChatResult, n: int) -> None:
        self.calls += 1
        self.samples += n if result.ok else 0
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.errors += 0 if result.ok else 1
        self.loads += result.loads
        self.engine_s += result.engine_s

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Engine(ABC):
    """A model that completes chat requests in batches.

    ``loads_model``: whether building the engine loads the model in this process (hf, vllm); an
    endpoint client (openai) or a client of a served deployment does not. The first results a
    loading engine starts its stats with ``loads=1``; a served replica reports its load on its first result.
    ``measures_time``: whether ``chat`` books its wall time as ``engine_s`` (not a client of a served
    deployment, whose replica reports its own).
    """

    loads_model: bool = True
    measures_time: bool = True

    def __init__(self, config: EngineConfig):
        self.config = config
        self.stats = EngineStats()
        self.stats.loads = 1 if self.loads_model else 0

    @abstractmethod
    def _chat(self, requests: list[ChatRequest]) -> list[ChatResult]: ...

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        if not requests:
            return []
        start = time.perf_counter()
        results = self._chat(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"engine {self.config.label} returned {len(results)} results for {len(requests)} requests")
        if self.measures_time:
            share = (time.perf_counter() - start) / len(results)
            for res in results:
                res.engine_s = share
        for req, res in zip(requests, results):
            self.stats.add(res, req.sampling.n)
        return results

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release the model; the engine is unusable afterwards."""


# --------------------------------------------------------------------------- message helpers


def as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(image))).convert("RGB")
    if isinstance(image, dict) and "bytes" in image:
        return as_pil(image["bytes"])
    raise TypeError(f"cannot use {type(image).__name__} as an image")


def user_message(text: str, images: list[Any] = ()) -> dict:
    """A user turn: the images first, then the text."""
    parts: list[dict] = [{"type": "image", "image": img} for img in images]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def system_message(text: str) -> dict:
    return {"role": "system", "content": text}


def message_images(messages: list[dict]) -> list[Image.Image]:
    """All images in the conversation, in order, as RGB PIL images."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            out.extend(as_pil(p["image"]) for p in content if p.get("type") == "image")
    return out


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages with images replaced by ``{"type": "image"}`` placeholders (for chat templates)."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = [{"type": "image"} if p.get("type") == "image" else {"type": "text", "text": p["text"]} for p in content]
        out.append({"role": msg["role"], "content": content})
    return out
