"""The OpenAI-compatible HTTP backend (vLLM / SGLang servers, hosted APIs).

One batch of requests is sent concurrently (at most ``max_concurrency`` in flight) from a
private event loop running in its own thread, so ``chat`` works the same from plain code, from
inside a running event loop and in a Ray actor. Each request asks for its ``n`` samples at once.

Sampling fields beyond OpenAI's own (``top_k``, ``repetition_penalty``) and grammars
(``structured_outputs: {"grammar" | "regex": ...}``) use vLLM's extra request fields; they are
sent only when a request sets them, so plain OpenAI-compatible APIs see the standard body.

Failures are retried with exponential backoff and jitter on 429, 5xx, timeouts and connection
errors, honouring ``Retry-After``; other 4xx answers are final. When retries run out the
request comes back with ``ChatResult.error`` (``"http_500"``, ``"timeout"``, ...).

The API key is read from the environment variable named by ``api_key_env`` when a batch starts;
it is sent in the ``Authorization`` header only and never appears in logs, reprs, errors or stats.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import os
import random
import threading
import time
from typing import Any

import httpx
from PIL import Image

from zwz_ray.engines.base import ChatRequest, ChatResult, Engine, as_pil
from zwz_ray.engines.structured import with_schema_instruction
from zwz_ray.logs import get_logger

log = get_logger(__name__)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(520, 530))


class _Retryable(Exception):
    def __init__(self, code: str, retry_after: float | None = None):
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


class _LoopThread:
    """An event loop running forever in a daemon thread; ``run`` submits a coroutine and waits."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="zwz-openai-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class OpenAIEngine(Engine):
    """Chat completions against ``base_url`` (``.../v1``)."""

    loads_model = False  # the endpoint holds the model

    backoff_base_s = 0.5  # first retry waits ~this long, doubling each time
    backoff_max_s = 30.0  # cap for one wait (Retry-After is honoured up to retry_after_max_s)
    retry_after_max_s = 120.0

    def __init__(self, config):
        super().__init__(config)
        if not config.base_url:
            raise ValueError("the openai backend needs base_url")
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.model_name = config.served_model or config.model
        self.retries = 0  # total retried attempts, for monitoring
        self._loop: _LoopThread | None = None
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"OpenAIEngine(url={self.url!r}, model={self.model_name!r})"

    # ------------------------------------------------------------------ batch

    def _chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        if self._loop is None:
            self._loop = _LoopThread()
        return self._loop.run(self._batch(requests))

    async def _batch(self, requests: list[ChatRequest]) -> list[ChatResult]:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.config.max_concurrency)
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout_s), limits=limits)
        headers = _auth_headers(self.config.api_key_env)
        gate = asyncio.Semaphore(self.config.max_concurrency)

        async def one(req: ChatRequest) -> ChatResult:
            async with gate:
                return await self._with_retries(req, headers)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _with_retries(self, req: ChatRequest, headers: dict) -> ChatResult:
        try:
            body = self.payload(req)
        except Exception as exc:  # an unreadable image: this request only
            return ChatResult(error=f"bad_request: {type(exc).__name__}: {exc}")
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            try:
                return await self._post(body, headers)
            except _Retryable as exc:
                if attempt == attempts - 1:
                    return ChatResult(error=exc.code)
                delay = self._backoff(attempt, exc.retry_after)
                self.retries += 1
                log.warning("request %r: %s; retry %d/%d in %.2fs", req.request_id, exc.code, attempt + 1, attempts - 1, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return ceiling * (0.5 + random.random() / 2)  # "equal jitter": between half and all of the ceiling

    async def _post(self, body: dict, headers: dict) -> ChatResult:
        try:
            resp = await self._client.post(self.url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise _Retryable("timeout") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection_error: {type(exc).__name__}") from None
        if resp.status_code in RETRY_STATUSES:
            raise _Retryable(f"http_{resp.status_code}", _retry_after(resp.headers.get("retry-after")))
        if resp.status_code >= 400:
            return ChatResult(error=f"http_{resp.status_code}: {_redact(resp.text[:300], headers)}")
        try:
            return _parse_response(resp.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return ChatResult(error=f"bad_response: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ request body

    def payload(self, req: ChatRequest) -> dict:
        """The JSON body of one chat-completions call."""
        s = req.sampling
        messages = req.messages
        structured = req.json_schema is not None and self.config.structured_output != "off"
        if req.json_schema is not None and not structured:
            messages = with_schema_instruction(messages, req.json_schema)
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [_wire_message(m) for m in messages],
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": s.seed if s.seed is not None else self.config.seed,
        }
        if s.top_k_or_none is not None:
            body["top_k"] = s.top_k_or_none
        if s.presence_penalty != 0:
            body["presence_penalty"] = s.presence_penalty
        if s.repetition_penalty != 1:
            body["repetition_penalty"] = s.repetition_penalty
        if structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": req.json_schema, "strict": True}}
        elif req.grammar is not None and self.config.structured_output != "off":
            body["structured_outputs"] = {"grammar" if req.grammar.kind == "ebnf" else "regex": req.grammar.text}
        return body

    def close(self) -> None:
        if self._loop is not None:
            if self._client is not None:
                self._loop.run(self._client.aclose())
            self._loop.stop()
        self._loop = self._client = None


# --------------------------------------------------------------------------- helpers


def _auth_headers(env_name: str) -> dict:
    key = os.environ.get(env_name) if env_name else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def _redact(text: str, headers: dict) -> str:
    auth = headers.get("Authorization", "")
    key = auth[len("Bearer ") :] if auth else ""
    return text.replace(key, "***") if key else text


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _parse_response(data: dict) -> ChatResult:
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    usage = data.get("usage") or {}
    return ChatResult(
        texts=[(c.get("message") or {}).get("content") or "" for c in choices],
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reasons=[c.get("finish_reason") or "stop" for c in choices],
    )


def _wire_message(msg: dict) -> dict:
    content = msg.get("content")
    if isinstance(content, list):
        content = [_wire_part(p) for p in content]
    return {"role": msg["role"], "content": content}


def _wire_part(part: dict) -> dict:
    if part.get("type") == "image":
        return {"type": "image_url", "image_url": {"url": image_data_url(part["image"])}}
    return {"type": "text", "text": part["text"]}


def image_data_url(image: Any) -> str:
    """A base64 data URL; encoded bytes are sent as they are, PIL images as lossless PNG."""
    raw = image.get("bytes") if isinstance(image, dict) else image
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        fmt = (Image.open(io.BytesIO(raw)).format or "PNG").lower()
        return f"data:image/{fmt};base64,{base64.b64encode(raw).decode()}"
    buf = io.BytesIO()
    as_pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
