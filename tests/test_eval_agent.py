"""The zoom-agent baseline: the tool executor on scripted replies, then the loop on a tiny model through Ray."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from zwz_ray.config import ConfigError, EngineConfig, ResourcesConfig, load_config
from zwz_ray.engines import ChatResult, Engine
from zwz_ray.eval.agent import AGENT_VIEW, ZoomAgent, agent_fingerprint, use_grammar
from zwz_ray.eval.agent_tools import (
    FAMILY_GEOMETRY,
    Geometry,
    ToolCall,
    ZoomTool,
    parse_call,
    read_geometry,
    read_reply,
    resolve_coords,
    source_box,
    turn_grammar,
    zoom_box,
)
from zwz_ray.eval.config import AgentConfig, EvalConfig, InferenceConfig

QWEN25 = "tiny:qwen2_5_vl"
QWEN3 = "tiny:qwen3_vl"


def call(box, name="image_zoom_in_tool") -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": {"bbox_2d": box}}) + "\n</tool_call>"


def picture(w=500, h=300) -> Image.Image:
    """Grey, with a red square at (100, 60)-(160, 120) in source pixels."""
    img = Image.new("RGB", (w, h), (128, 128, 128))
    ImageDraw.Draw(img).rectangle((100, 60, 159, 119), fill=(230, 20, 20))
    return img


# --------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_geometry_is_what_the_processor_does(family):
    from zwz_ray.models import load_processor, resolve_model

    path = resolve_model(f"tiny:{family}")
    processor, geometry = load_processor(path), read_geometry(path)
    patch = processor.image_processor.patch_size
    for w, h in [(500, 300), (37, 1200), (64, 64), (1999, 1003), (300, 500)]:
        grid = processor.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0]
        assert geometry.resized(w, h) == (int(grid[2]) * patch, int(grid[1]) * patch), (w, h)


def test_absolute_box_on_the_resized_image_maps_back_to_the_source():
    img, geometry = picture(), Geometry(28, 56 * 56, 200 * 200)  # 500x300 is seen as 252x140
    seen_w, seen_h = geometry.resized(*img.size)
    assert (seen_w, seen_h) == (252, 140)
    sx, sy = seen_w / 500, seen_h / 300
    box = [100 * sx, 60 * sy, 160 * sx, 120 * sy]  # the red square where the model sees it
    assert source_box(box, "absolute", 500, 300, geometry) == pytest.approx((100, 60, 160, 120))
    crop, record = ZoomTool("absolute", geometry, upscale=1.0)(img, ToolCall("", bbox=box))
    assert crop.size == (60, 60) and record["error"] is None and not record["clamped"]
    assert np.all(np.asarray(crop) == (230, 20, 20))


def test_relative_box_is_thousandths_of_the_source():
    img = picture()
    box = [200, 200, 320, 400]  # x: 100..160 of 500, y: 60..120 of 300
    assert source_box(box, "relative1000", 500, 300, FAMILY_GEOMETRY["qwen3_vl"]) == pytest.approx((100, 60, 160, 120))
    crop, _ = ZoomTool("relative1000", FAMILY_GEOMETRY["qwen3_vl"], upscale=2.0)(img, ToolCall("", bbox=box))
    assert crop.size == (120, 120) and np.all(np.asarray(crop)[10:-10, 10:-10] == (230, 20, 20))


def test_boxes_are_clamped_and_never_thinner_than_min_side():
    assert zoom_box((-50, -20, 100, 90), 500, 300) == (0, 0, 100, 90)
    assert zoom_box((10, 10, 12, 12), 500, 300) == (0, 0, 28, 28)  # grown around its centre, kept inside
    x1, y1, x2, y2 = zoom_box((200, 100, 202, 103), 500, 300)
    assert (x2 - x1, y2 - y1) == (28, 28) and (x1 + x2) / 2 == 201 and (y1 + y2) / 2 == 101.5
    assert zoom_box((2, 290, 5, 299), 500, 300) == (0, 272, 28, 300)  # grown inside the image at a corner
    assert zoom_box((900, 400, 999, 500), 500, 300) == (472, 272, 500, 300)  # off the image: a strip at the edge
    assert zoom_box((0, 0, 5, 5), 20, 10, min_side=28) == (0, 0, 20, 10)  # an image smaller than min_side: all of it
    crop, record = ZoomTool("relative1000", FAMILY_GEOMETRY["qwen3_vl"], upscale=1.0)(picture(), ToolCall("", bbox=[-10, 0, 1500, 20]))
    assert record["clamped"] and record["box"] == [0, 0, 500, 28] and crop.size == (500, 28)


def test_upscale_stops_at_the_processor_budget():
    tool = ZoomTool("relative1000", Geometry(32, 1024, 300 * 300), upscale=4.0)
    crop, _ = tool(picture(), ToolCall("", bbox=[0, 0, 1000, 1000]))
    assert crop.size == (500, 300)  # the whole 150k-pixel image is above the 90k budget: not enlarged


# --------------------------------------------------------------------------- reading replies


@pytest.mark.parametrize("body, error", [
    ('{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 3, 4]}}', None),
    ('{"name": "image_zoom_in_tool", "arguments": "{\\"bbox_2d\\": [1, 2, 3, 4]}"}', None),  # OpenAI-style string
    ("bbox please", "not a JSON object"),
    ('{"name": "crop", "arguments": {"bbox_2d": [1, 2, 3, 4]}}', "unknown tool 'crop'"),
    ('{"name": "image_zoom_in_tool", "arguments": {"box": [1, 2, 3, 4]}}', "no bbox_2d"),
    ('{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 3]}}', "4 numbers"),
    ('{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, true, 3, 4]}}', "4 numbers"),
])
def test_parse_call(body, error):
    got = parse_call(body)
    assert (got.error is None) if error is None else (error in got.error)
    assert got.bbox == ([1.0, 2.0, 3.0, 4.0] if error is None else None)


def test_read_reply():
    assert read_reply("I see it. <answer>red</answer>") == ("answer", [])
    assert read_reply(call([1, 2, 3, 4]) + " <answer>red</answer>")[0] == "answer"  # an answer ends the episode
    assert read_reply("just text, no tags") == ("answer", [])
    assert read_reply(None) == ("answer", [])
    kind, calls = read_reply(call([1, 2, 3, 4]) + "then" + call([5, 6, 7, 8]) + '<tool_call>{"name": "image_zo')
    assert kind == "tool" and [c.bbox for c in calls[:2]] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert "unclosed" in calls[2].error


def test_turn_grammar_is_a_call_or_an_answer():
    from xgrammar import Grammar as XGrammar
    from xgrammar.testing import _is_grammar_accept_string as accepts

    for coords, big in (("absolute", "9999"), ("relative1000", "1000")):
        free, last = (XGrammar.from_ebnf(turn_grammar(coords, final).check().text) for final in (False, True))
        tool_call = call([0, 12, int(big), 7])
        assert accepts(free, tool_call) and accepts(free, "<answer>red</answer>")
        assert accepts(last, "<answer>red</answer>") and not accepts(last, tool_call)
        assert not accepts(free, call([0, 1, 2, 3], name="crop")) and not accepts(free, "<answer></answer>")
        assert not accepts(free, call([0, 1, 2, int(big) + 1]))


def test_coords_follow_the_family_and_grammar_auto_follows_tiny_models():
    assert resolve_coords("auto", EngineConfig(model=QWEN25)) == ("absolute", "qwen2_5_vl")
    assert resolve_coords("auto", EngineConfig(model=QWEN3)) == ("relative1000", "qwen3_vl")
    served = EngineConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="served-model",
                          served_model="Qwen/Qwen3-VL-8B-Instruct")
    assert resolve_coords("auto", served)[0] == "relative1000"
    assert resolve_coords("absolute", EngineConfig(model=QWEN3))[0] == "absolute"
    assert use_grammar(AgentConfig(), EngineConfig(model=QWEN25))
    assert not use_grammar(AgentConfig(), EngineConfig(model="Qwen/Qwen3-VL-8B-Instruct"))
    assert not use_grammar(AgentConfig(grammar=False), EngineConfig(model=QWEN25))


def test_config_mistakes_are_caught_before_work():
    with pytest.raises(ConfigError, match="agent.models"):
        load_config(EvalConfig, None, ["agent.models=[nope]"])
    with pytest.raises(ConfigError, match="max_turns"):
        load_config(EvalConfig, None, ["agent.max_turns=0"])
    laptop = load_config(EvalConfig, "configs/evaluate/laptop.yaml")
    assert laptop.agent.enabled and laptop.agent.grammar is True
    assert load_config(EvalConfig, None, ["agent.grammar=off"]).agent.grammar is False


def test_fingerprint_follows_the_agent_settings():
    model, inference = EngineConfig(model=QWEN25), InferenceConfig()
    fp = agent_fingerprint(model, inference, AgentConfig())
    assert fp == agent_fingerprint(model, inference, AgentConfig(enabled=True, models=[QWEN25]))
    assert fp != agent_fingerprint(model, inference, AgentConfig(max_turns=3))


# --------------------------------------------------------------------------- the loop on scripted replies


class ScriptedEngine(Engine):
    """Replies from a script keyed by (item id, turn); records every call (unit tests only)."""

    def __init__(self, script: dict[tuple[str, int], str | None]):
        super().__init__(EngineConfig(model="scripted"))
        self.script, self.batches = script, []

    def _chat(self, requests):
        self.batches.append(requests)
        out = []
        for r in requests:
            item, _, turn = r.request_id.split(":")
            text = self.script[(item, int(turn))]
            out.append(ChatResult(error="generate_failed: boom") if text is None else
                       ChatResult(texts=[text], prompt_tokens=100 * int(turn), completion_tokens=7, finish_reasons=["stop"]))
        return out


def test_loop_on_scripted_replies():
    red = [200, 200, 320, 400]  # the red square, 0..1000
    script = {
        ("a", 1): call(red), ("a", 2): "<answer>red</answer>",
        ("b", 1): '<tool_call>{"name": "image_zoom_in_tool"}</tool_call>', ("b", 2): call([0, 0, 10, 10]), ("b", 3): call(red),
        ("c", 1): "<answer>grey</answer>",
        ("d", 1): None,
    }
    engine = ScriptedEngine(script)
    tool = ZoomTool("relative1000", FAMILY_GEOMETRY["qwen3_vl"], upscale=2.0)
    agent = ZoomAgent(engine, AgentConfig(max_turns=3), InferenceConfig(), tool, grammar=True)
    episodes = agent.run([agent.start({"id": i, "question": "What colour is the square?"}, picture()) for i in "abcd"])
    a, b, c, d = episodes
    assert [len(batch) for batch in engine.batches] == [4, 2, 1]  # one engine call per turn for the active items
    sampling = engine.batches[0][0].sampling  # the single pass's sampling, the agent's own generation limit
    assert (sampling.temperature, sampling.max_tokens) == (0.0, AgentConfig().max_tokens)  # greedy by default, as single pass
    assert [r.grammar.text.startswith("root ::= answer") for r in engine.batches[2]] == [True]  # the last turn must answer
    assert (a.stop, a.turns, a.tool_calls, a.malformed_calls, a.images) == ("answer", 2, 1, 0, 2)
    assert a.response == "<answer>red</answer>" and a.prompt_tokens == 300 and a.completion_tokens == 14
    sent = engine.batches[1][0].messages  # a's second turn: system, question + image, its call, the crop
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    crop = next(p["image"] for p in sent[3]["content"] if p["type"] == "image")
    assert crop.size == (120, 120) and np.all(np.asarray(crop)[10:-10, 10:-10] == (230, 20, 20))
    assert a.calls[0]["box"] == [100, 60, 160, 120] and a.latency_s > 0 and a.episode_s > 0
    assert (b.stop, b.turns, b.tool_calls, b.malformed_calls, b.images) == ("turn_limit", 3, 2, 1, 2)
    assert "no bbox_2d" in b.calls[0]["error"] and b.calls[1]["clamped"]  # 0..10 of 300 px grows to 28 px
    failed_turn = engine.batches[1][1].messages[-1]["content"]
    assert any("zoom-in call failed: no bbox_2d" in p.get("text", "") for p in failed_turn)
    assert (c.stop, c.turns, c.tool_calls, c.images) == ("answer", 1, 0, 1)
    assert d.stop == "error" and "boom" in d.error and d.turns == 1


def test_max_turns_one_is_a_single_constrained_answer():
    engine = ScriptedEngine({("a", 1): call([1, 2, 3, 4])})
    agent = ZoomAgent(engine, AgentConfig(max_turns=1), InferenceConfig(), ZoomTool("absolute", FAMILY_GEOMETRY["qwen2_5_vl"]), True)
    (e,) = agent.run([agent.start({"id": "a", "question": "Q?"}, picture())])
    assert (e.stop, e.turns, e.tool_calls) == ("turn_limit", 1, 0) and len(engine.batches) == 1


# --------------------------------------------------------------------------- the loop on a tiny model, through Ray


def _bench(path: str, n: int) -> str:
    from zwz_ray.eval.writers import write_zoombench

    rows = []
    for i in range(n):
        img = Image.new("RGB", (224, 168), (120, 130, 140))
        box = [20 + 10 * i, 30, 60 + 10 * i, 70]
        ImageDraw.Draw(img).rectangle(box, fill=(220, 30, 30))
        rows.append({"id": i, "question": "What colour is the square?", "answer": "red", "image": img, "crop": None,
                     "bbox": box, "category": "color"})
    return write_zoombench(path, rows)


@pytest.fixture(scope="module")
def agent_run(ray_session, tmp_path_factory):
    from zwz_ray.eval import run_eval
    from zwz_ray.eval.config import BenchmarkConfig, OutputConfig

    root = tmp_path_factory.mktemp("agent")
    model = EngineConfig(model=QWEN25, device="cpu", dtype="float32", resources=ResourcesConfig(batch_size=3))
    cfg = EvalConfig(benchmark=BenchmarkConfig(path=_bench(str(root / "bench.parquet"), 3)), models=[model],
                     judge=EngineConfig(model="tiny:text", device="cpu", dtype="float32"),
                     inference=InferenceConfig(views=["global"], max_tokens=8),
                     agent=AgentConfig(enabled=True, max_turns=2, max_tokens=80, grammar=True),
                     output=OutputConfig(dir=str(root / "out")))
    return cfg, run_eval(cfg)


def test_tiny_agent_answers_within_max_turns(agent_run):
    cfg, result = agent_run
    out = cfg.output.dir
    preds = pd.read_parquet(os.path.join(out, "predictions", "tiny_qwen2_5_vl.parquet"))
    agent = preds[preds["view"] == AGENT_VIEW]
    assert len(agent) == 3 and (preds["view"] == "global").sum() == 3
    assert agent["rule"].isin(["exact", "normalized", "llm_judge", "no_answer", "undecided"]).all()
    assert agent["response"].str.contains("<answer>").all()  # the grammar's last turn always answers
    traces = pd.read_parquet(os.path.join(out, AGENT_VIEW, "predictions", "tiny_qwen2_5_vl.parquet"))
    assert len(traces) == 3 and traces["turns"].between(1, 2).all() and traces["stop"].eq("answer").all()
    assert (traces["images"] == 1 + traces["tool_calls"] - traces["malformed_calls"]).all()
    assert traces["tool_calls"].sum() >= 1 and traces["images"].max() >= 2  # the greedy tiny model zooms: crops went back
    calls = [c for text in traces["calls"] for c in json.loads(text)]
    assert all(c["error"] is None and len(c["box"]) == 4 for c in calls)
    m = json.loads(open(os.path.join(out, "metrics.json")).read())
    a = m["models"][QWEN25]["agent"]
    assert a["n"] == 3 and 1 <= a["mean_turns"] <= 2 and a["latency_ratio"] > 0
    assert a["agent_tokens"] > 0 and a["single_tokens"] > 0 and a["agent_items_per_s"] > 0
    assert m["models"][QWEN25]["views"]["agent"]["n"] == 3
    assert m["agent_runs"][QWEN25]["requests"] == 3 and m["agent_runs"][QWEN25]["turns"] == int(traces["turns"].sum())
    report = open(os.path.join(out, "report.md")).read()
    assert "## Single pass vs zoom agent" in report and "latency ratio" in report
    assert os.path.getsize(os.path.join(out, "plots", "agent_speed.png")) > 1000


def test_the_judge_is_served_once_and_deleted_after_the_run(agent_run):
    """The agent's tagged answers leave open answers undecided: the judge (serving.mode: serve, the default) decides
    them as ONE Serve deployment, loaded once, whatever the number of judge client actors, and gone after the run."""
    from ray import serve

    cfg, result = agent_run
    assert cfg.serving.mode == "serve" and result.metrics["judge_served"] is True
    preds = pd.read_parquet(os.path.join(cfg.output.dir, "predictions", "tiny_qwen2_5_vl.parquet"))
    judged = preds[preds["judge_output"].notna()]
    assert result.judge_requests == len(judged) > 0 and not judged["judge_output"].str.startswith("error:").any()
    assert result.judge_model_loads == 1 and result.metrics["judge_model_loads"] == 1
    assert not [n for n in serve.status().applications if n.startswith("zwz-eval-")]


def test_tiny_agent_resumes(agent_run):
    """A second run with the same settings finds every item answered and judged: it loads no model (the
    single pass, the agent and the judge: no Serve deployment starts)."""
    from zwz_ray.eval import run_eval

    cfg, first = agent_run
    again = run_eval(cfg)
    run = again.metrics["agent_runs"][QWEN25]
    assert (run["previously_answered"], run["requests"], run["turns"]) == (3, 0, 0)
    assert len(pd.read_parquet(run["traces_path"])) == 3
    assert again.runs[QWEN25].skipped and again.runs[QWEN25].model_loads == 0
    assert again.judge_requests == 0 and again.metrics["judge_model_loads"] == 0 and not again.metrics["judge_served"]
    assert again.metrics["models"][QWEN25]["views"] == first.metrics["models"][QWEN25]["views"]
