"""Shared prefill in the transformers engine: the n samples of a request reuse one prompt prefill.

Every check runs the same requests through the shared path and the expanded path
(``generate(num_return_sequences=n)``) of one engine and compares tokens, per-step logits and what
the model ran, observed with forward hooks on the real modules.
"""

from __future__ import annotations

import jsonschema
import pytest
import torch
from chat_inputs import VERDICT
from chat_inputs import two_colour_image as _image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, build_engine, parse_json, user_message
from zwz_ray.engines.hf_prefill import SHARED_PREFILL_MODEL_TYPES, can_share

FAMILIES = ["tiny:text", "tiny:qwen2_5_vl", "tiny:qwen3_vl", "tiny:idefics3"]
N = 3


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request):
    eng = build_engine(EngineConfig(backend="hf", model=request.param, device="cpu", max_batch_requests=4))
    yield eng
    eng.close()


def _vision_tower(model):
    base = model.base_model
    return getattr(base, "visual", None) or getattr(base, "vision_model", None)


class Observed:
    """What the model ran during one chat call: the rows x width of every embedding call, the number
    of vision-tower calls, and the last-position logits of every language-model head call."""

    def __init__(self, model):
        self.embeds: list[tuple[int, int]] = []
        self.vision_calls = 0
        self.logits: list[torch.Tensor] = []
        self._hooks = [
            model.get_input_embeddings().register_forward_hook(lambda m, a, out: self.embeds.append(tuple(a[0].shape))),
            model.get_output_embeddings().register_forward_hook(lambda m, a, out: self.logits.append(out[:, -1].float().clone())),
        ]
        tower = _vision_tower(model)
        if tower is not None:
            self._hooks.append(tower.register_forward_hook(lambda m, a, out: self._count_vision()))

    def _count_vision(self):
        self.vision_calls += 1

    def close(self):
        for hook in self._hooks:
            hook.remove()


def _run(engine, requests, shared: bool):
    engine.share_prefill, before = shared, engine.prefilled_tokens
    seen = Observed(engine.model)
    try:
        results = engine.chat(requests)
    finally:
        seen.close()
        engine.share_prefill = True
    return results, seen, engine.prefilled_tokens - before


def _requests(engine, max_tokens=10):
    """Two requests of different prompt lengths (so one is left-padded): greedy, then seeded sampling."""
    images = [_image()] if engine.is_vlm else []
    short = user_message("Describe it.", images)
    long = user_message("List every object in this picture, with its colour, its size and where it is.", images)
    return [
        ChatRequest([short], SamplingParams(n=N, temperature=0.0, max_tokens=max_tokens)),
        ChatRequest([long], SamplingParams(n=N, temperature=1.0, top_p=0.95, max_tokens=max_tokens, seed=7)),
    ]


def _assert_same_steps(shared_seen: Observed, expanded_seen: Observed, rows: int):
    """The decode steps (the head calls over all rows x samples) give the same logits on both paths."""
    steps_shared = [x for x in shared_seen.logits if x.shape[0] == rows]
    steps_expanded = [x for x in expanded_seen.logits if x.shape[0] == rows]
    assert len(steps_shared) == len(steps_expanded) > 0
    for step, (a, b) in enumerate(zip(steps_shared, steps_expanded)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, s=step: f"step {s}: {m}")


def test_every_tiny_family_is_allowed(engine):
    assert engine.model.config.model_type in SHARED_PREFILL_MODEL_TYPES


def test_shared_prefill_gives_the_expanded_outputs(engine):
    requests = _requests(engine)
    shared, shared_seen, shared_tokens = _run(engine, requests, shared=True)
    expanded, expanded_seen, expanded_tokens = _run(engine, requests, shared=False)
    for a, b in zip(shared, expanded):
        assert a.ok and b.ok, (a.error, b.error)
        assert a.texts == b.texts and a.finish_reasons == b.finish_reasons
        assert (a.prompt_tokens, a.completion_tokens) == (b.prompt_tokens, b.completion_tokens)
    assert len(set(shared[0].texts)) == 1 and len(set(shared[1].texts)) > 1  # greedy agrees, seeds differ
    assert shared[0].prompt_tokens < shared[1].prompt_tokens  # the short prompt is left-padded
    _assert_same_steps(shared_seen, expanded_seen, rows=2 * N)
    width = expanded_seen.embeds[0][1]
    # shared: one prefill of the 2 prompts minus their last token, then the last token of the 2 x N rows
    assert shared_seen.embeds[:2] == [(2, width - 1), (2 * N, 1)] and shared_tokens == 2 * (width - 1) + 2 * N
    assert expanded_seen.embeds[0] == (2 * N, width) and expanded_tokens == 2 * N * width
    if engine.is_vlm:  # the images are encoded once per chunk on both paths (transformers encodes before it repeats)
        assert shared_seen.vision_calls == 1 and expanded_seen.vision_calls == 1


def test_one_sample_keeps_the_expanded_path(engine):
    images = [_image()] if engine.is_vlm else []
    request = ChatRequest([user_message("Describe it.", images)], SamplingParams(n=1, temperature=0.0, max_tokens=4))
    result, seen, tokens = _run(engine, [request], shared=True)
    assert result[0].ok and seen.embeds[0][0] == 1 and tokens == seen.embeds[0][1]


def test_json_schema_and_repetition_penalty_on_the_shared_path(engine):
    images = [_image()] if engine.is_vlm else []
    prompt = [user_message("Is the question about the cup valid? Describe the cup in detail.", images)]
    requests = [
        ChatRequest(prompt, SamplingParams(n=N, temperature=1.0, max_tokens=60, seed=3), json_schema=VERDICT),
        ChatRequest(prompt, SamplingParams(n=N, temperature=0.0, max_tokens=60, repetition_penalty=1.8)),
        ChatRequest(prompt, SamplingParams(n=N, temperature=0.0, max_tokens=60)),
    ]
    (schema, penalised, plain), seen, tokens = _run(engine, requests, shared=True)
    width = seen.embeds[0][1] + 1
    assert seen.embeds[1] == (3 * N, 1) and tokens == 3 * (width - 1) + 3 * N  # the shared path ran
    assert schema.ok and schema.finish_reasons == ["stop"] * N
    for text in schema.texts:
        value, error = parse_json(text, VERDICT)
        assert error is None, (text, error)
        jsonschema.validate(value, VERDICT)
    assert penalised.ok and plain.ok and penalised.texts[0] != plain.texts[0]
    assert [r.texts for r in _run(engine, requests, shared=False)[0]] == [schema.texts, penalised.texts, plain.texts]


def test_text_only_requests_on_a_vlm_share_too(engine):
    if not engine.is_vlm:
        pytest.skip("a text model has no image-free variant")
    requests = [
        ChatRequest([user_message("Name a colour.")], SamplingParams(n=N, temperature=1.0, max_tokens=8, seed=1)),
        ChatRequest(
            [user_message("Name three colours and three shapes, please.")], SamplingParams(n=N, temperature=1.0, max_tokens=8, seed=2)
        ),
    ]
    shared, shared_seen, _ = _run(engine, requests, shared=True)
    expanded, expanded_seen, _ = _run(engine, requests, shared=False)
    assert [r.texts for r in shared] == [r.texts for r in expanded] and all(r.ok for r in shared)
    assert shared_seen.embeds[1] == (2 * N, 1) and shared_seen.vision_calls == 0
    _assert_same_steps(shared_seen, expanded_seen, rows=2 * N)


def test_prompts_the_shared_path_does_not_take(engine):
    ids = torch.tensor([[5, 6, 7], [0, 6, 7]])
    assert can_share(engine.model, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1], [0, 1, 1]])}, n=2)
    assert not can_share(engine.model, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1], [0, 1, 1]])}, n=1)
    assert not can_share(engine.model, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1], [0, 0, 1]])}, n=2)
    media = [getattr(engine.model.config, k, None) for k in ("image_token_id", "image_token_index")]
    media = [m for m in media if isinstance(m, int)]
    if media:  # a prompt ending in an image token: its rope positions would not continue as text
        last = torch.tensor([[5, 6, media[0]], [5, 6, 7]])
        assert not can_share(engine.model, {"input_ids": last, "attention_mask": torch.ones(2, 3, dtype=torch.long)}, n=2)
