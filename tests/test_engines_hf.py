"""The transformers engine on tiny offline models: batching, n samples, structured output, grammars, top-k, penalties, seeds, errors."""

from __future__ import annotations

import jsonschema
import pytest
import torch
from chat_inputs import VERDICT
from chat_inputs import two_colour_image as _image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, Grammar, SamplingParams, build_engine, parse_json, user_message

OBJECTS = {
    "type": "object",
    "properties": {"objects": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 4}},
    "required": ["objects"],
}


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


# --------------------------------------------------------------------------- grammars, top-k, penalties

BOXED = Grammar.ebnf('root ::= "Reasoning: " [a-z ]{0,24} "\\n\\\\boxed{" [a-zA-Z0-9 ]{1,12} "}"')


def test_regex_and_ebnf_grammars_are_obeyed(text_engine):
    import re

    sampling = SamplingParams(n=3, temperature=1.0, max_tokens=60, seed=5)
    yes_no = ChatRequest([user_message("Is the cup red?")], sampling, grammar=Grammar.regex("(yes|no)"))
    boxed = ChatRequest([user_message("What colour is the cup?")], sampling, grammar=BOXED)
    free = ChatRequest([user_message("What colour is the cup?")], sampling)
    res_yes_no, res_boxed, res_free = text_engine.chat([yes_no, boxed, free])
    assert res_yes_no.ok and set(res_yes_no.texts) <= {"yes", "no"} and res_yes_no.finish_reasons == ["stop"] * 3
    assert res_boxed.ok and res_boxed.finish_reasons == ["stop"] * 3
    for text in res_boxed.texts:
        assert re.fullmatch(r"Reasoning: [a-z ]{0,24}\n\\boxed\{[a-zA-Z0-9 ]{1,12}\}", text), text
    assert res_free.ok and not any(t.startswith("Reasoning: ") for t in res_free.texts)  # the grammar stays on its row


def test_bad_grammar_fails_its_request_only(text_engine):
    with pytest.raises(ValueError, match="bad ebnf grammar"):
        Grammar.ebnf("root ::= (").check()
    bad = ChatRequest([user_message("hi")], SamplingParams(max_tokens=4), grammar=Grammar.ebnf("root ::= ("))
    ok = ChatRequest([user_message("hi")], SamplingParams(max_tokens=4))
    results = text_engine.chat([bad, ok])
    assert results[0].error.startswith("bad_request") and "bad ebnf grammar" in results[0].error and results[1].ok


def test_one_constraint_per_request_and_bad_sampling_values():
    with pytest.raises(ValueError, match="not both"):
        ChatRequest([user_message("hi")], json_schema=VERDICT, grammar=Grammar.regex("yes"))
    with pytest.raises(ValueError, match="grammar kind"):
        Grammar("lark", "start: x")
    for bad in ({"top_k": -2}, {"presence_penalty": 3.0}, {"repetition_penalty": 0.0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_top_k_one_is_greedy_and_penalties_change_the_text(text_engine):
    prompt = [user_message("Describe the cup in detail.")]
    greedy = ChatRequest(prompt, SamplingParams(temperature=0.0, max_tokens=24))
    top1 = ChatRequest(prompt, SamplingParams(n=2, temperature=1.5, top_k=1, max_tokens=24, seed=3))
    hot = ChatRequest(prompt, SamplingParams(n=2, temperature=1.5, max_tokens=24, seed=3))
    repeat = ChatRequest(prompt, SamplingParams(temperature=0.0, max_tokens=24, repetition_penalty=1.8))
    present = ChatRequest(prompt, SamplingParams(temperature=0.0, max_tokens=24, presence_penalty=2.0))
    g, t1, h, r, p = text_engine.chat([greedy, top1, hot, repeat, present])
    assert t1.texts == [g.texts[0]] * 2 and h.texts != t1.texts
    assert r.texts != g.texts and p.texts != g.texts
    tok = text_engine.tokenizer
    ids = tok(g.texts[0], add_special_tokens=False)["input_ids"]
    assert len(set(ids)) < len(ids)  # greedy repeats itself (random weights), so the penalties had work to do
    pids = tok(p.texts[0], add_special_tokens=False)["input_ids"]
    assert len(set(pids)) / len(pids) > len(set(ids)) / len(ids)  # fewer repeats under the presence penalty


def test_penalties_on_hand_made_logits():
    from zwz_ray.engines.hf import Penalties

    # two rows, prompt width 3 (row 1 has one pad token, id 0), then two generated tokens
    input_ids = torch.tensor([[1, 2, 3, 4, 4], [0, 2, 2, 5, 1]])
    scores = torch.tensor([[1.0, 2.0, -2.0, 4.0, 3.0, 0.5], [1.0, 2.0, -2.0, 4.0, 3.0, 0.5]])
    presence = Penalties([1.5, 0.0], [1.0, 1.0], prompt_width=3, pads=[0, 1])(input_ids, scores.clone())
    # row 0 generated {4}: subtracted once although it appears twice; the prompt's tokens are untouched
    assert presence[0].tolist() == [1.0, 2.0, -2.0, 4.0, 1.5, 0.5] and presence[1].tolist() == scores[1].tolist()
    rep = Penalties([0.0, 0.0], [1.0, 2.0], prompt_width=3, pads=[0, 1])(input_ids, scores.clone())
    # row 1 saw {2, 5, 1} (the pad 0 is skipped): positive logits halve, negative ones double
    assert rep[1].tolist() == [1.0, 1.0, -4.0, 4.0, 3.0, 0.25] and rep[0].tolist() == scores[0].tolist()
    both = Penalties([1.0, 0.0], [2.0, 1.0], prompt_width=3, pads=[0, 1])(input_ids, scores.clone())
    assert both[0].tolist() == [1.0, 1.0, -4.0, 2.0, 0.5, 0.5]  # 4: 3 / 2 - 1
    assert not Penalties([0.0], [1.0], 3, [0]).active
