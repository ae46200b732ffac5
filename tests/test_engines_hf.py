"""The transformers engine on tiny offline models: batching, n samples, structured output, seeds, errors."""

from __future__ import annotations

import jsonschema
import pytest
from PIL import Image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, build_engine, parse_json, user_message

OBJECTS = {
    "type": "object",
    "properties": {"objects": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 4}},
    "required": ["objects"],
}
VERDICT = {
    "type": "object",
    "properties": {"valid": {"enum": ["Yes", "No"]}, "reason": {"type": "string", "maxLength": 30}},
    "required": ["valid", "reason"],
}


def _image(color=(200, 40, 40)) -> Image.Image:
    img = Image.new("RGB", (160, 120), color)
    img.paste((20, 20, 200), (40, 30, 90, 80))
    return img


@pytest.fixture(scope="module", params=["tiny:qwen2_5_vl", "tiny:qwen3_vl"])
def vlm(request):
    engine = build_engine(EngineConfig(backend="hf", model=request.param, device="cpu", max_batch_requests=4))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def text_engine():
    engine = build_engine(EngineConfig(backend="hf", model="tiny:text", device="cpu", max_batch_requests=4))
    yield engine
    engine.close()


def _objects_request(i: int, seed: int | None = None, n: int = 2) -> ChatRequest:
    sampling = SamplingParams(n=n, temperature=1.0, max_tokens=160, seed=i if seed is None else seed)
    return ChatRequest([user_message(f"List the objects in image {i}.", [_image()])], sampling, json_schema=OBJECTS, request_id=str(i))


def _assert_valid(result, schema, n):
    assert result.ok, result.error
    assert len(result.texts) == n and result.finish_reasons == ["stop"] * n
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    for text in result.texts:
        value, error = parse_json(text, schema)
        assert error is None, (text, error)
        jsonschema.validate(value, schema)


def test_vlm_batch_n_samples_structured(vlm):
    results = vlm.chat([_objects_request(i) for i in range(3)])
    assert len(results) == 3
    for res in results:
        _assert_valid(res, OBJECTS, n=2)
    # Image tokens are counted: the image prompt is much longer than its text alone.
    text_only = vlm.chat([ChatRequest([user_message("List the objects in image 0.")], SamplingParams(max_tokens=4))])[0]
    assert results[0].prompt_tokens > text_only.prompt_tokens + 4
    assert vlm.stats.calls >= 4 and vlm.stats.samples >= 6


def test_seeded_sampling_does_not_depend_on_the_batch(vlm):
    alone = vlm.chat([_objects_request(1)])[0]
    batched = vlm.chat([_objects_request(0), _objects_request(1), _objects_request(2)])[1]
    assert alone.texts == batched.texts
    other_seed = vlm.chat([_objects_request(1, seed=99)])[0]
    assert other_seed.texts != alone.texts


def test_greedy_samples_are_identical(text_engine):
    req = ChatRequest([user_message("What colour is the cup?")], SamplingParams(n=3, temperature=0.0, max_tokens=12))
    res = text_engine.chat([req])[0]
    assert res.ok and len(set(res.texts)) == 1 and res.completion_tokens > 0


def test_text_model_enum_schema(text_engine):
    reqs = [
        ChatRequest(
            [user_message(f"Is question {i} valid?")],
            SamplingParams(n=2, temperature=1.0, top_p=0.9, max_tokens=80, seed=i),
            json_schema=VERDICT,
        )
        for i in range(3)
    ]
    for res in text_engine.chat(reqs):
        _assert_valid(res, VERDICT, n=2)
        assert {parse_json(t, VERDICT)[0]["valid"] for t in res.texts} <= {"Yes", "No"}


def test_overlong_prompt_fails_alone(text_engine):
    short = ChatRequest([user_message("Name one colour.")], SamplingParams(max_tokens=8))
    long = ChatRequest([user_message("red cup " * 5000)], SamplingParams(max_tokens=8))
    results = text_engine.chat([short, long, short])
    assert results[0].ok and results[2].ok
    assert results[1].error.startswith("prompt_too_long") and results[1].prompt_tokens > 4096
    assert results[0].texts == results[2].texts


def test_text_model_rejects_images_per_request(text_engine):
    results = text_engine.chat(
        [ChatRequest([user_message("What is this?", [_image()])]), ChatRequest([user_message("hello")], SamplingParams(max_tokens=4))]
    )
    assert "cannot take images" in results[0].error and results[1].ok


def test_structured_output_off_describes_the_schema(text_engine):
    from zwz_ray.config import EngineConfig

    off = build_engine(EngineConfig(backend="hf", model="tiny:text", device="cpu", structured_output="off"))
    req = ChatRequest([user_message("Is it valid?")], SamplingParams(max_tokens=8, temperature=0.0), json_schema=VERDICT)
    plain = ChatRequest([user_message("Is it valid?")], SamplingParams(max_tokens=8, temperature=0.0))
    described, bare = off.chat([req, plain])
    assert described.ok and described.prompt_tokens > bare.prompt_tokens + 20
