"""The offline vLLM engine (CPU build here): images, n samples in one request, JSON schemas, errors."""

from __future__ import annotations

import jsonschema
import pytest
from PIL import Image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, build_engine, parse_json, user_message

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

OBJECTS = {
    "type": "object",
    "properties": {"objects": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 4}},
    "required": ["objects"],
}


def _engine(model: str):
    return build_engine(
        EngineConfig(backend="vllm", model=model, max_model_len=1024, kv_cache_memory_bytes=64 << 20, enforce_eager=True, dtype="float32")
    )


def _check(results, n):
    for res in results:
        assert res.ok, res.error
        assert len(res.texts) == n and res.prompt_tokens > 0 and res.completion_tokens > 0
        for text in res.texts:
            value, error = parse_json(text, OBJECTS)
            assert error is None, (text, error)
            jsonschema.validate(value, OBJECTS)


def test_idefics3_image_n4_schema():
    engine = _engine("tiny:idefics3")
    image = Image.new("RGB", (200, 150), (30, 160, 60))
    reqs = [
        ChatRequest(
            [user_message(f"List the objects ({i}).", [image])],
            SamplingParams(n=4, temperature=1.0, max_tokens=160, seed=i),
            json_schema=OBJECTS,
        )
        for i in range(2)
    ]
    results = engine.chat(reqs)
    _check(results, n=4)
    text_only = engine.chat([ChatRequest([user_message("List the objects (0).")], SamplingParams(max_tokens=4))])[0]
    assert results[0].prompt_tokens > text_only.prompt_tokens + 10  # image tokens are counted
    assert engine.chat(reqs[:1])[0].texts == results[0].texts  # seeded
    engine.close()


def test_text_model_schema_and_overlong_prompt():
    engine = _engine("tiny:text")
    ok = ChatRequest([user_message("List the objects.")], SamplingParams(n=2, temperature=1.0, max_tokens=160), json_schema=OBJECTS)
    long = ChatRequest([user_message("red cup " * 1000)], SamplingParams(max_tokens=8))
    results = engine.chat([ok, long, ok])
    _check([results[0], results[2]], n=2)
    assert results[1].error.startswith("prompt_too_long")
    engine.close()
