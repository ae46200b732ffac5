"""Evaluation protocols: the published ``reference`` setting and the cheap greedy ``fast`` one.

What each protocol sends (system turn, question text, sampling, pixels), how it reads answers
(extraction policy, letter matching on ZoomBench), how its judge is asked, and that every number
in metrics.json and the report names the protocol that produced it.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from PIL import Image

from zwz_ray.config import ConfigError, EngineConfig, ResourcesConfig, load_config
from zwz_ray.eval import EvalConfig
from zwz_ray.eval.config import PROTOCOLS, REFERENCE_JUDGE, BenchmarkConfig, InferenceConfig, OutputConfig
from zwz_ray.eval.stages import ViewAnswerer, apply_rules, protocol_engine, rule_options
from zwz_ray.eval.store import answer_fingerprint
from zwz_ray.judge import EVAL_EQUIVALENCE_SCHEMA, LLMJudge, parse_equivalence
from zwz_ray.prompts import judge_yes_no_prompt, reference_system_prompt, student_prompt

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "evaluate")
QUESTION = "What colour is the cap?\n(A) red\n(B) blue"


def test_reference_preset_is_the_published_setting():
    p = InferenceConfig(protocol="reference").protocol_settings()
    assert (p.temperature, p.top_p, p.top_k, p.presence_penalty, p.repetition_penalty, p.seed, p.max_tokens) == \
        (0.7, 0.8, 20, 1.5, 1.0, 42, 8192)
    assert (p.min_pixels, p.max_pixels) == (65_536, 16_777_216)
    assert (p.prompt, p.extraction, p.judge_prompt, p.zoombench_letters) == ("reference", "eval", "yes_no", False)
    assert p.judge_model == REFERENCE_JUDGE == "Qwen/Qwen3-30B-A3B-Instruct-2507"
    fast = InferenceConfig().protocol_settings()
    assert fast.name == "fast" and fast.temperature == 0.0 and fast.prompt == "student" and fast.max_pixels is None


def test_overrides_apply_on_top_and_are_named():
    inf = InferenceConfig(protocol="reference", max_tokens=6, temperature=0.7)
    assert inf.protocol_settings().max_tokens == 6 and inf.protocol_settings().top_k == 20
    assert inf.overrides() == {"max_tokens": 6}  # the preset's own value is no override
    assert inf.describe() == "reference (max_tokens=6)" and InferenceConfig(protocol="reference").describe() == "reference"
    with pytest.raises(ConfigError, match="did you mean 'reference'"):
        load_config(EvalConfig, None, ["inference.protocol=refrence"])
    with pytest.raises(ConfigError, match="min_pixels"):
        load_config(EvalConfig, None, ["inference.protocol=reference", "inference.min_pixels=20000000"])


def _rows():
    img = Image.new("RGB", (64, 48), (10, 20, 200))
    return [{"id": "7", "view": "global", "question": QUESTION + "\n", "image": img}]


def test_reference_requests_carry_the_system_turn_and_the_raw_question():
    (req,) = ViewAnswerer(EngineConfig(), InferenceConfig(protocol="reference"))._requests(_rows())
    system, user = req.messages
    assert system == {"role": "system", "content": reference_system_prompt()} and "<answer>" in system["content"]
    assert user["content"][0]["type"] == "image" and user["content"][1] == {"type": "text", "text": QUESTION}
    s = req.sampling
    assert (s.temperature, s.top_p, s.top_k, s.presence_penalty, s.repetition_penalty, s.seed, s.max_tokens) == \
        (0.7, 0.8, 20, 1.5, 1.0, 42, 8192)


def test_fast_requests_are_greedy_with_the_student_prompt():
    (req,) = ViewAnswerer(EngineConfig(), InferenceConfig(max_tokens=24))._requests(_rows())
    (user,) = req.messages
    assert user["content"][1]["text"] == student_prompt(QUESTION)
    assert (req.sampling.temperature, req.sampling.top_k, req.sampling.presence_penalty, req.sampling.max_tokens) == \
        (0.0, None, 0.0, 24)


def test_reference_pixels_replace_the_models_own():
    model = EngineConfig(min_pixels=3136, max_pixels=50176)
    ref = protocol_engine(model, InferenceConfig(protocol="reference").protocol_settings())
    assert (ref.min_pixels, ref.max_pixels) == (65_536, 16_777_216) and ref.model == model.model
    assert protocol_engine(model, InferenceConfig().protocol_settings()) is model
    mine = protocol_engine(model, InferenceConfig(protocol="reference", max_pixels=1_000_000).protocol_settings())
    assert mine.max_pixels == 1_000_000


def _answered(response: str, answer: str = "B") -> pd.DataFrame:
    return pd.DataFrame([{"id": "1", "view": "global", "question": QUESTION, "answer": answer, "category": None,
                          "is_mcq": True, "options": ["red", "blue"], "response": response, "error": None, "done": False}])


def test_zoombench_is_not_letter_matched_under_the_reference_protocol():
    ref, fast = InferenceConfig(protocol="reference"), InferenceConfig()
    assert rule_options(ref, zoombench=True) == {"policy": "eval", "letters": False}
    assert rule_options(ref, zoombench=False) == {"policy": "eval", "letters": True}  # MMStar, HR-Bench, V*, ...
    assert rule_options(fast, zoombench=True) == {"policy": "default", "letters": True}
    reply = "The cap looks blue.\n<answer>(B) blue</answer>"
    by_letter = apply_rules(_answered(reply), "m", **rule_options(ref, zoombench=False)).iloc[0]
    assert (by_letter["rule"], bool(by_letter["correct"])) == ("mcq_letter", True)
    zoom = apply_rules(_answered(reply), "m", **rule_options(ref, zoombench=True)).iloc[0]
    assert zoom["rule"] == "undecided" and zoom["extracted"] == "(B) blue"  # the LLM judge decides


def test_reference_extraction_takes_the_first_answer_block():
    reply = "<answer>red</answer> on second thought <answer>blue</answer>"
    first = apply_rules(_answered(reply, "red"), "m", policy="eval", letters=False).iloc[0]
    last = apply_rules(_answered(reply, "red"), "m", policy="default", letters=False).iloc[0]
    assert (first["extracted"], bool(first["correct"])) == ("red", True)
    assert (last["extracted"], bool(last["correct"])) == ("blue", False)
    tail = apply_rules(_answered("line 1\nline 2\nline 3\nred", "red"), "m", policy="eval", letters=False).iloc[0]
    assert tail["extracted"] == "line 2 line 3 red"  # no tag, no "Answer:": the last 3 lines


def test_yes_no_judge_is_asked_in_plain_text():
    rows = [{"question": "How many?", "answer": "5", "extracted": "five", "id": "1", "view": "global"}]
    (req,) = LLMJudge(engine=None, max_tokens=8, decision="yes_no").requests(rows)
    assert req.json_schema is None and req.grammar is None and req.sampling.temperature == 0.0
    assert req.messages[0]["content"][-1]["text"] == judge_yes_no_prompt("How many?", "5", "five")
    (json_req,) = LLMJudge(engine=None, decision="json").requests(rows)
    assert json_req.json_schema == EVAL_EQUIVALENCE_SCHEMA
    assert [parse_equivalence(t) for t in ("Yes", "No.", " yes\n", "maybe")] == [True, False, True, None]
    with pytest.raises(ValueError, match="decision"):
        LLMJudge(engine=None, decision="score")


def test_cluster_config_runs_the_reference_protocol_laptop_the_fast_one():
    cluster = load_config(EvalConfig, os.path.join(CONFIGS, "cluster.yaml"))
    assert cluster.inference.protocol == "reference" and cluster.inference.overrides() == {}
    assert cluster.judge.model == REFERENCE_JUDGE
    assert all(m.max_model_len >= 8192 + 16_777_216 // (32 * 32) for m in cluster.models)  # room for the image + 8192
    laptop = load_config(EvalConfig, os.path.join(CONFIGS, "laptop.yaml"))
    assert laptop.inference.protocol == "fast"


def test_protocols_give_different_fingerprints():
    model = EngineConfig()
    prints = {answer_fingerprint(model, InferenceConfig(protocol=name)) for name in PROTOCOLS}
    assert len(prints) == len(PROTOCOLS)


def test_metrics_and_report_name_the_protocol(ray_session, tmp_path):
    """A reference-protocol run on a tiny model (token budget overridden): every number says where it came from."""
    from zwz_ray.eval import run_eval
    from zwz_ray.eval.writers import write_zoombench

    img = Image.new("RGB", (96, 64), (200, 30, 30))
    rows = [{"id": i, "question": QUESTION if i else "What colour is it?", "answer": "B" if i else "red", "image": img,
             "crop": img.crop((0, 0, 32, 32)), "bbox": [0, 0, 32, 32], "category": "color"} for i in range(2)]
    bench = write_zoombench(str(tmp_path / "bench.parquet"), rows)
    model = EngineConfig(model="tiny:qwen2_5_vl", device="cpu", dtype="float32", resources=ResourcesConfig(batch_size=4))
    cfg = EvalConfig(benchmark=BenchmarkConfig(path=bench), models=[model], judge=None,
                     inference=InferenceConfig(protocol="reference", max_tokens=6, max_pixels=65_536 * 2),
                     output=OutputConfig(dir=str(tmp_path / "out")))
    result = run_eval(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    record = metrics["protocol"]
    assert record["name"] == "reference" and record["overrides"] == {"max_tokens": 6, "max_pixels": 131072}
    assert record["settings"]["top_k"] == 20 and record["settings"]["seed"] == 42 and record["judge_as_published"] is False
    assert metrics["models"]["tiny:qwen2_5_vl"]["protocol"] == "reference (max_tokens=6, max_pixels=131072)"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| model | protocol | items |" in report
    assert "| tiny:qwen2_5_vl | reference (max_tokens=6, max_pixels=131072) | 2 |" in report
    preds = pd.read_parquet(tmp_path / "out" / "predictions" / "tiny_qwen2_5_vl.parquet")
    assert len(preds) == 4 and (preds["completion_tokens"] <= 6).all()
    assert (preds["fingerprint"] == answer_fingerprint(model, cfg.inference)).all()
    assert "mcq_letter" not in set(preds["rule"])  # ZoomBench under the reference protocol: no letter matching
    assert result.runs["tiny:qwen2_5_vl"].requests == 4
