"""The vLLM backend: the offline ``vllm.LLM`` engine, on GPUs or with the CPU build.

A batch is one ``LLM.chat`` call: images go in as PIL image parts, the ``n`` samples of a
request are one vLLM request (``SamplingParams(n=...)``, one prefill), and a JSON schema, EBNF
grammar or regex becomes vLLM's structured outputs (``StructuredOutputsParams(json= / grammar= /
regex=...)``, xgrammar inside). top-k and the presence / repetition penalties are vLLM's own.

The engine is a plain object, so a Ray Data actor (``map_batches`` with a callable class) can
own one. We run our own actor rather than ``ray.data.llm``'s vLLM processor because, as of
Ray 2.60:
  * its vLLM stage keeps only the first sample of each request (``output.outputs[0]`` in
    ``ray/llm/_internal/batch/stages/vllm_engine_stage.py``), and R2I needs n samples per
    prompt (answering, difficulty filter);
  * its multimodal preparation stage imports ``vllm.entrypoints.chat_utils``, which the vLLM
    versions we run (0.32, including the CPU build) no longer have; ``ray[llm]`` pins vllm 0.29.
"""

from __future__ import annotations

import os
from typing import Any

from zwz_ray.engines.base import ChatRequest, ChatResult, Engine, as_pil
from zwz_ray.engines.structured import with_schema_instruction
from zwz_ray.logs import get_logger

log = get_logger(__name__)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


class VLLMEngine(Engine):
    """``vllm.LLM`` behind the engine interface."""

    def __init__(self, config):
        super().__init__(config)
        if not _cuda_available():
            # The CPU build otherwise starts its engine core in a spawned process, which
            # re-imports __main__ (breaks under pytest and in notebooks); in-process is fine on CPU.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from zwz_ray.models import model_family, resolve_model

        self.family = model_family(config.model)
        self.llm = LLM(**self.llm_kwargs(resolve_model(config.model)))

    def llm_kwargs(self, path: str) -> dict[str, Any]:
        c = self.config
        kwargs: dict[str, Any] = dict(
            model=path,
            tokenizer=path,
            dtype=c.dtype,
            tensor_parallel_size=c.tensor_parallel_size,
            gpu_memory_utilization=c.gpu_memory_utilization,
            max_model_len=c.max_model_len,
            enforce_eager=c.enforce_eager,
            seed=c.seed,
            # the stages about one image share its prefix (a served replica gets them by image affinity)
            enable_prefix_caching=True,
            # xgrammar honours maxLength/maxItems; no free whitespace, so bounded schemas end in time.
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
        if c.kv_cache_memory_bytes:
            kwargs["kv_cache_memory_bytes"] = c.kv_cache_memory_bytes
        pixels = {k: v for k, v in (("min_pixels", c.min_pixels), ("max_pixels", c.max_pixels)) if v is not None}
        if pixels and self.family in ("qwen2_5_vl", "qwen3_vl"):
            kwargs["mm_processor_kwargs"] = pixels
        return kwargs

    def __repr__(self) -> str:
        return f"VLLMEngine(model={self.config.model!r})"

    def close(self) -> None:
        self.llm = None

    # ------------------------------------------------------------------ requests

    def sampling_params(self, req: ChatRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        s = req.sampling
        structured = None
        if self.config.structured_output != "off":
            if req.json_schema is not None:
                structured = StructuredOutputsParams(json=req.json_schema)
            elif req.grammar is not None:
                structured = StructuredOutputsParams(**{"grammar" if req.grammar.kind == "ebnf" else "regex": req.grammar.text})
        return SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k_or_none or 0,  # vLLM: 0 = off
            presence_penalty=s.presence_penalty,
            repetition_penalty=s.repetition_penalty,
            max_tokens=s.max_tokens,
            seed=s.seed if s.seed is not None else self.config.seed,
            structured_outputs=structured,
        )

    def conversation(self, req: ChatRequest) -> list[dict]:
        messages = req.messages
        if req.json_schema is not None and self.config.structured_output == "off":
            messages = with_schema_instruction(messages, req.json_schema)
        return [_vllm_message(m) for m in messages]

    def _chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        try:
            return self._run(requests)
        except Exception as exc:
            if len(requests) == 1:
                log.warning("vLLM failed on request %r: %s", requests[0].request_id, exc)
                return [ChatResult(error=_error_code(exc))]
            mid = len(requests) // 2  # bisect to isolate the failing request(s)
            return self._chat(requests[:mid]) + self._chat(requests[mid:])

    def _run(self, requests: list[ChatRequest]) -> list[ChatResult]:
        conversations = [self.conversation(r) for r in requests]
        params = [self.sampling_params(r) for r in requests]
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [_result(out) for out in outputs]


def _vllm_message(msg: dict) -> dict:
    content = msg.get("content")
    if isinstance(content, list):
        content = [
            {"type": "image_pil", "image_pil": as_pil(p["image"])} if p.get("type") == "image" else {"type": "text", "text": p["text"]}
            for p in content
        ]
    return {"role": msg["role"], "content": content}


def _result(out: Any) -> ChatResult:
    samples = sorted(out.outputs, key=lambda o: o.index)
    return ChatResult(
        texts=[o.text for o in samples],
        prompt_tokens=len(out.prompt_token_ids or []),
        completion_tokens=sum(len(o.token_ids) for o in samples),
        finish_reasons=[o.finish_reason or "stop" for o in samples],
    )


def _error_code(exc: Exception) -> str:
    text = str(exc)
    if "maximum context length" in text or "maximum model length" in text:
        return f"prompt_too_long: {text[:200]}"
    return f"generate_failed: {type(exc).__name__}: {text[:200]}"
