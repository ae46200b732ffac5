"""The vLLM backend inside a Ray Serve replica (the CPU build): a tiny Idefics3 VLM served once, called from the driver."""

from __future__ import annotations

import jsonschema
import pytest
from PIL import Image

from zwz_ray.config import EngineConfig, ResourcesConfig
from zwz_ray.engines import ChatRequest, SamplingParams, build_engine, connect, parse_json, user_message
from zwz_ray.engines.deployments import Deployments, ModelPlan
from zwz_ray.engines.served import ServedEngine
from zwz_ray.engines.serving import ServingConfig

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

COLOURS = {
    "type": "object",
    "properties": {"colours": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}},
    "required": ["colours"],
}
CONFIG = EngineConfig(backend="vllm", model="tiny:idefics3", max_model_len=1024, kv_cache_memory_bytes=64 << 20,
                      enforce_eager=True, dtype="float32", resources=ResourcesConfig(num_cpus=1))


def _image_request(seed: int, image: Image.Image) -> ChatRequest:
    return ChatRequest([user_message(f"Name the colours ({seed}).", [image])],
                       SamplingParams(n=3, temperature=1.0, max_tokens=48, seed=seed), json_schema=COLOURS)


def _check_samples(result, n: int) -> None:
    assert result.ok, result.error
    assert len(result.texts) == n and result.completion_tokens > 0 and result.engine_s > 0
    for text in result.texts:
        value, error = parse_json(text, COLOURS)
        assert error is None, (text, error)
        jsonschema.validate(value, COLOURS)


def _apps() -> list[str]:
    from ray import serve

    return list(serve.status().applications)


@pytest.fixture(scope="module")
def served(ray_session):
    """Two calls to one served replica (one deployment start), and the applications seen during and after."""
    image = Image.new("RGB", (200, 150), (30, 160, 60))
    first_requests = [_image_request(0, image), _image_request(1, image)]
    text_only = ChatRequest([user_message("Name the colours (0).")], SamplingParams(max_tokens=4))
    too_long = ChatRequest([user_message("red cup " * 1000)], SamplingParams(max_tokens=4))
    plan = ModelPlan(ServingConfig())
    plan.use(CONFIG, "test")
    with Deployments(plan, "vllmtest") as deployments:
        engine = connect(CONFIG, deployments.refs)
        during = _apps()
        first = engine.chat(first_requests)  # one group (one image): one call, one engine batch
        second = engine.chat([text_only, too_long, first_requests[0]])
    return {"engine": engine, "app": engine.ref.app, "left": dict(deployments.refs), "during": during, "after": _apps(),
            "requests": first_requests, "first": first, "second": second}


def test_served_vllm_samples_schema_seeds_tokens_loads_and_errors(served):
    engine, first, (text_only, too_long, again) = served["engine"], served["first"], served["second"]
    assert isinstance(engine, ServedEngine)
    for result in first:
        _check_samples(result, n=3)
    assert first[0].texts != first[1].texts  # different seeds, different samples
    assert [r.loads for r in first] == [1, 0]  # the replica reports its one load on its first result
    assert [r.loads for r in served["second"]] == [0, 0, 0]
    assert engine.stats.loads == 1 and engine.stats.calls == 5 and engine.stats.errors == 1
    # the overlong prompt is an error result of its own; the requests it shared the call with are answered
    assert too_long.error is not None and too_long.error.startswith("prompt_too_long"), too_long.error
    assert text_only.ok and again.ok, (text_only.error, again.error)
    assert first[0].prompt_tokens > text_only.prompt_tokens + 10  # image tokens are counted
    assert again.texts == first[0].texts  # seeded: the same samples in another call, in another batch


def test_the_application_is_deleted_on_exit(served):
    app = served["app"]
    assert app.startswith("zwz-vllmtest-tiny-idefics3-") and app in served["during"]
    assert app not in served["after"] and served["left"] == {}


def test_a_local_engine_gives_the_served_samples(served):
    local = build_engine(CONFIG)
    try:
        results = local.chat(served["requests"])
    finally:
        local.close()
    assert [r.texts for r in results] == [r.texts for r in served["first"]]
    assert [r.prompt_tokens for r in results] == [r.prompt_tokens for r in served["first"]]
