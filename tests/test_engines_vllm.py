"""The offline vLLM engine (CPU build here): images, n samples in one request, JSON schemas, grammars, top-k, penalties, errors."""

from __future__ import annotations

import re

import jsonschema
import pytest
from PIL import Image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, Grammar, SamplingParams, build_engine, parse_json, user_message

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
    # grammars (regex, EBNF) and the extra sampling fields, in the same engine
    sampling = SamplingParams(n=3, temperature=1.0, max_tokens=64, seed=2, top_k=20, presence_penalty=1.5, repetition_penalty=1.1)
    prompt = [user_message("Is the cup red?")]
    regex, ebnf, greedy, top1 = engine.chat([
        ChatRequest(prompt, sampling, grammar=Grammar.regex("(yes|no)")),
        ChatRequest(prompt, sampling, grammar=Grammar.ebnf('root ::= [a-z ]{0,16} "\\\\boxed{" [a-z]{1,8} "}"')),
        ChatRequest(prompt, SamplingParams(temperature=0.0, max_tokens=16)),
        ChatRequest(prompt, SamplingParams(n=2, temperature=1.0, top_k=1, max_tokens=16, seed=4)),
    ])
    assert regex.ok and len(regex.texts) == 3 and set(regex.texts) <= {"yes", "no"}, regex.error or regex.texts
    assert ebnf.ok and all(re.fullmatch(r"[a-z ]{0,16}\\boxed\{[a-z]{1,8}\}", t) for t in ebnf.texts), ebnf.error or ebnf.texts
    assert greedy.ok and top1.ok and top1.texts == greedy.texts * 2
    params = engine.sampling_params(ChatRequest(prompt, sampling, grammar=Grammar.regex("(yes|no)")))
    assert (params.top_k, params.presence_penalty, params.repetition_penalty) == (20, 1.5, 1.1)
    assert params.structured_outputs.regex == "(yes|no)"
    engine.close()
