"""Early-stopped consensus: a later answerer skips a question the samples so far already rule out.

The bound (``early_drop``) is checked against stage 8 itself: every skipped question is one that
full sampling drops as ``no_consensus`` (whatever the remaining samples and the judge say), and every
question not skipped could still be kept. The stage runs on a real tiny VLM through the hf engine;
only the stage-8 judge is a stand-in (its real counterpart is a model), made to merge as much as its
guard allows: the worst case for the bound.
"""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import combinations_with_replacement, product
from pathlib import Path

import pytest
from PIL import Image
from synth_rows import new_row

from zwz_ray.config import ConfigError, EngineConfig, load_config
from zwz_ray.engines import ChatResult, Engine
from zwz_ray.images import encode_image
from zwz_ray.synth import build_synthesis
from zwz_ray.synth.columns import to_table
from zwz_ray.synth.config import AnswersConfig, ConsensusConfig, SynthConfig
from zwz_ray.synth.stages import Answers, Consensus
from zwz_ray.synth.stages.s08_consensus import (
    ConsensusResult,
    _judge_can_matter,
    consensus,
    early_drop,
    keep,
    needed_votes,
)

THRESHOLDS = [0.0, 0.1, 0.125, 0.25, 0.5, 0.6, 2 / 3, 0.7, 0.75, 0.8, 0.875, 0.9, 1.0]


def run(stage, rows: list[dict]) -> list[dict]:
    return stage(to_table(rows)).to_pylist()


def row(i: int, answers: list | None = None) -> dict:
    crop = encode_image(Image.new("RGB", (120, 90), (40 * i % 255, 30, 200)), "PNG")
    out = {
        **new_row(f"img{i}.png"),
        "object_index": 0,
        "question_index": i,
        "question": f"What colour is item {i}?",
        "crop": crop,
        "teacher_answers": answers,
    }
    return out


# --------------------------------------------------------------------------- the arithmetic


def test_needed_votes_is_exactly_what_keep_accepts():
    for n in range(1, 13):
        for t in THRESHOLDS:
            need = needed_votes(n, t)
            assert 1 <= need <= n
            assert [keep(ConsensusResult("x", k / n), t) for k in range(1, n + 1)] == [k >= need for k in range(1, n + 1)]
    assert [needed_votes(8, t) for t in (0.0, 0.125, 0.5, 0.75, 0.875, 1.0)] == [1, 1, 4, 6, 7, 8]
    assert (needed_votes(6, 0.75), needed_votes(10, 0.7), needed_votes(3, 2 / 3), needed_votes(12, 0.75)) == (5, 7, 2, 9)
    assert needed_votes(0, 0.75) == 1  # no samples: never kept


@pytest.mark.parametrize(
    "first,normaliser,judged",
    [
        (["red", "blue", "green", ""], True, False),  # no answer with 2 votes; a judge could merge the 3
        (["red", "Red.", "blue", ""], False, False),  # 2 votes + 4 to come = 6
        (["", "", "red", ""], True, True),  # 1 non-empty + 4 = 5 < 6 even if the judge merged everything
        (["", "red", "crimson", None], True, False),
        (["", "red", "red", " . "], False, False),  # "." normalises to empty: 2 + 4
        (["", "", "", ""], True, True),
    ],
)
def test_bound_after_the_first_of_two_teachers(first, normaliser, judged):
    t, n, remaining = 0.75, 8, 4
    assert early_drop(first, remaining, n, t, "exact", judged=False) is normaliser
    assert early_drop(first, remaining, n, t, "normalizer", judged=True) is normaliser  # the approximation
    assert early_drop(first, remaining, n, t, "exact", judged=True) is judged
    assert early_drop(first, remaining, n, t, "off", judged=False) is False


def test_bound_edge_cases():
    lost = ["red", "blue", "green", "pink"]
    assert not any(early_drop(a, 4, 8, 0.0) for a in (lost, ["", "", "", ""]))  # threshold 0: one answer to come suffices
    assert early_drop(["red", "red", "red", "blue"], 4, 8, 1.0)  # threshold 1: all 8 must agree
    assert not early_drop(["red"] * 4, 4, 8, 1.0)
    assert not early_drop(["red", "red", "red", "blue"], 4, 8, 1.0, judged=True)  # a judge may call blue red
    assert early_drop(["red", "", "red", "blue"], 4, 8, 1.0, judged=True)  # an empty sample never joins
    # 3 + 3 samples, 0.75: 5 of 6 needed
    assert early_drop(["red", "blue", "green"], 3, 6, 0.75) and not early_drop(["red", "red", "green"], 3, 6, 0.75)
    # 3 answerers x 4, 0.75: 9 of 12; the second may only skip an all-empty first, the third more
    assert not early_drop(["red", "blue", "green", "pink"], 8, 12, 0.75) and early_drop([""] * 4, 8, 12, 0.75)
    assert early_drop(["red"] * 4 + ["blue"] * 4, 4, 12, 0.75)
    assert not early_drop(["red"] * 5 + ["blue"] * 3, 4, 12, 0.75)
    assert not early_drop([], 8, 8, 0.75)  # nothing drawn yet: the first answerer never skips


def compositions(symbols: list, k: int):
    return list(combinations_with_replacement(symbols, k))


MERGE_ALL = lambda pairs: [True] * len(pairs)  # noqa: E731 - the judge that merges the most
SYMBOLS = ["red", "crimson", "blue", ""]


@pytest.mark.parametrize("t", [0.5, 0.75, 0.875, 1.0])
def test_exact_skips_exactly_the_questions_full_sampling_cannot_keep(t):
    """Every first half x every second half (the keep decision depends on the counts only)."""
    for first, second in product(compositions(SYMBOLS, 4), repeat=2):
        full = list(first) + list(second)
        normaliser = keep(consensus(full, t), t)
        judged = keep(consensus(full, t, same=MERGE_ALL), t)
        if early_drop(list(first), 4, 8, t):
            assert not normaliser, (first, second)
        if early_drop(list(first), 4, 8, t, judged=True):
            assert not judged, (first, second)
    for first in compositions(SYMBOLS, 4):  # tight: a question not skipped has a completion that is kept
        saves = [keep(consensus(list(first) + list(s), t), t) for s in compositions(SYMBOLS, 4)]
        assert any(saves) is not early_drop(list(first), 4, 8, t)
        merged = [keep(consensus(list(first) + list(s), t, same=MERGE_ALL), t) for s in compositions(SYMBOLS, 4)]
        assert any(merged) is not early_drop(list(first), 4, 8, t, judged=True)


def test_when_exact_skips_under_a_judge_the_judge_is_never_asked():
    """_judge_can_matter finds such a question hopeless, whatever the groups."""
    for n in range(1, 13):
        for t in THRESHOLDS:
            for non_empty in range(needed_votes(n, t)):
                for sizes in partitions(non_empty):
                    groups, start = [], 0
                    for s in sizes:
                        groups.append(list(range(start, start + s)))
                        start += s
                    assert not _judge_can_matter(groups, n, t), (n, t, sizes)


def partitions(total: int, most: int | None = None):
    most = total if most is None else most
    if total == 0:
        yield []
        return
    for first in range(min(total, most), 0, -1):
        for rest in partitions(total - first, first):
            yield [first, *rest]


def test_normalizer_rule_is_an_approximation_under_a_judge():
    same = lambda pairs: [{a, b} <= {"red", "crimson"} for a, b in pairs]  # noqa: E731
    first, second = ["red", "crimson", "blue", ""], ["red", "crimson", "red", "red"]
    assert early_drop(first, 4, 8, 0.75, "normalizer", judged=True)  # skipped...
    assert keep(consensus(first + second, 0.75, same=same), 0.75)  # ...though the judge would keep it (6 of 8)
    assert not early_drop(first, 4, 8, 0.75, "exact", judged=True)


# --------------------------------------------------------------------------- stage 8 on early-stopped answers


class MergingJudge(Engine):
    """Stand-in for the stage-8 LLM judge, merging as much as its guard allows (holistic: the first
    non-empty answer with every non-empty sample as its count; pairwise: every pair is the same)."""

    def __init__(self, answers_by_question: dict[str, list]):
        super().__init__(EngineConfig(model="judge"))
        self.answers = answers_by_question

    def _chat(self, requests):
        out = []
        for req in requests:
            text = req.messages[0]["content"][-1]["text"]
            if "same" in json.dumps(req.json_schema):
                out.append(ChatResult(texts=['{"same": "Yes"}']))
                continue
            answers = next(a for q, a in self.answers.items() if q in text)
            filled = [a for a in answers if a and a.strip(" .")]
            out.append(ChatResult(texts=[json.dumps({"reasoning": "", "answer": filled[0], "count": len(filled)})]))
        return out


@pytest.mark.parametrize("mode", ["holistic", "pairwise"])
def test_skipped_questions_drop_as_they_would_after_full_sampling(mode):
    firsts = [["", "", "", "red"], ["", "", "", ""], ["blue", "", None, ""], ["red", "blue", "", "green"]]
    second = ["red"] * 4  # the best the second answerer could do
    skipped = [early_drop(f, 4, 8, 0.75, judged=True) for f in firsts]
    assert skipped == [True, True, True, False]
    full = [row(i, f + second) for i, f in enumerate(firsts)]
    stopped = [row(i, f + ([] if s else second)) for i, (f, s) in enumerate(zip(firsts, skipped))]
    judge = MergingJudge({r["question"]: r["teacher_answers"] for r in full})
    stage = Consensus(ConsensusConfig(mode=mode), EngineConfig(model="judge"), engine=judge, expected_samples=8)
    out_full, calls_full = run(stage, full), judge.stats.calls
    out_stopped = run(stage, stopped)
    assert calls_full == judge.stats.calls - calls_full >= 1  # only the open question reached the judge, both times
    for a, b, s in zip(out_full, out_stopped, skipped):
        assert (a["drop_stage"], a["drop_reason"]) == (b["drop_stage"], b["drop_reason"])
        assert (a["drop_reason"] == "no_consensus") is s
        assert ("4 of 8 samples drawn" in (b["drop_detail"] or "")) is s
    assert out_full[3]["answer_text"] == "red" and out_full[3]["consistency"] == 7 / 8  # the merge kept it


# --------------------------------------------------------------------------- stage 7 on a real tiny VLM




ANSWERS = AnswersConfig(frame="boxed_grammar", frame_reasoning_chars=4, answer_max_chars=8, max_tokens=24)
FIRSTS = [
    ["red", "red", "blue", ""],  # alive: 2 votes + 4
    ["red", "blue", "green", "pink"],  # lost to the normaliser; a judge might merge them
    ["", "", "", "red"],
]  # lost either way


def second_answerer(tiny_vlm, early_stop="exact", judged=False, **kw) -> Answers:
    cfg, engine = tiny_vlm
    return Answers(
        cfg,
        kw.pop("answers", ANSWERS),
        ConsensusConfig(early_stop=early_stop),
        position=kw.pop("position", 2),
        answerers=kw.pop("answerers", 2),
        judged=judged,
        engine=engine,
        name="answers_2",
    )


def flags(out: list[dict], stage="answers_2") -> dict:
    return json.loads(out[0]["usage"])[stage].get("flags", {})


@pytest.mark.parametrize(
    "early_stop,judged,asked", [("exact", False, [0]), ("exact", True, [0, 1]), ("normalizer", True, [0]), ("off", False, [0, 1, 2])]
)
def test_a_skipped_question_costs_no_model_call(tiny_vlm, early_stop, judged, asked):
    engine = tiny_vlm[1]
    before = engine.stats.as_dict()
    out = run(second_answerer(tiny_vlm, early_stop, judged), [row(i, list(f)) for i, f in enumerate(FIRSTS)])
    assert engine.stats.calls - before["calls"] == len(asked)
    assert engine.stats.samples - before["samples"] == 4 * len(asked)
    for i, r in enumerate(out):
        assert r["drop_stage"] is None
        assert r["teacher_answers"][:4] == FIRSTS[i] and len(r["teacher_answers"]) == (8 if i in asked else 4)
    skipped = 3 - len(asked)
    assert flags(out) == ({"early_stopped": skipped, "samples_saved": 4 * skipped} if skipped else {})


def test_rows_not_skipped_are_identical_to_full_sampling(tiny_vlm):
    """Same inputs, early stop on and off: the rows still sampled get the same samples (seeds come from
    the stage and the row, never from the batch), and stage 8 decides every row the same way."""
    rows = [row(i, list(FIRSTS[i % 3])) for i in range(6)]
    full = run(second_answerer(tiny_vlm, "off"), [dict(r) for r in rows])
    stopped = run(second_answerer(tiny_vlm, "exact"), [dict(r) for r in rows])
    assert flags(stopped) == {"early_stopped": 4, "samples_saved": 16}
    for a, b in zip(full, stopped):
        if len(b["teacher_answers"]) == 8:
            assert {k: v for k, v in a.items() if k != "usage"} == {k: v for k, v in b.items() if k != "usage"}
    assert sum(len(b["teacher_answers"]) == 8 for b in stopped) == 2
    stage = Consensus(ConsensusConfig(), None, expected_samples=8)
    for a, b in zip(run(stage, full), run(stage, stopped)):
        assert (a["drop_stage"], a["drop_reason"], a["answer_text"]) == (b["drop_stage"], b["drop_reason"], b["answer_text"])


def test_three_answerers_skip_at_the_second_and_the_third(tiny_vlm):
    cfg, engine = tiny_vlm
    two = replace(ANSWERS, samples_per_teacher=2)  # 3 x 2 samples, threshold 1: all 6 must agree
    chain = [
        Answers(cfg, two, ConsensusConfig(threshold=1.0), position=i, answerers=3, engine=engine, name=f"answers_{i}") for i in (1, 2, 3)
    ]
    before = engine.stats.calls
    rows = run(chain[0], [row(i, None) for i in range(2)])
    assert engine.stats.calls - before == 2 and flags(rows, "answers_1") == {}  # the first answerer never skips
    rows[0]["teacher_answers"], rows[1]["teacher_answers"] = ["red", "blue"], ["red", "red"]
    rows = run(chain[1], rows)
    assert flags(rows, "answers_2") == {"early_stopped": 1, "samples_saved": 2}
    assert rows[0]["teacher_answers"] == ["red", "blue"] and len(rows[1]["teacher_answers"]) == 4
    rows[1]["teacher_answers"] = ["red", "red", "Red.", "red"]  # still alive: 4 + 2 = 6
    before = engine.stats.calls
    rows = run(chain[2], rows)
    assert engine.stats.calls - before == 1 and flags(rows, "answers_3") == {"early_stopped": 1, "samples_saved": 2}
    assert rows[0]["teacher_answers"] == ["red", "blue"] and len(rows[1]["teacher_answers"]) == 6


def test_position_outside_the_answerers_is_an_error(tiny_vlm):
    with pytest.raises(ValueError, match="position 3"):
        second_answerer(tiny_vlm, position=3, answerers=2)


# --------------------------------------------------------------------------- configuration and plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "synth"


def test_the_plan_tells_every_answerer_its_place():
    plan = build_synthesis(load_config(SynthConfig, str(CONFIGS / "laptop.yaml"), []))
    places = [plan.stage(f"answers_{i}").kwargs for i in (1, 2)]
    assert [(k["position"], k["answerers"], k["judged"]) for k in places] == [(1, 2, True), (2, 2, True)]
    assert places[1]["consensus"].early_stop == "exact" and places[1]["consensus"] is plan.config.consensus
    plan = build_synthesis(load_config(SynthConfig, str(CONFIGS / "laptop.yaml"), ["consensus.mode=normalizer"]))
    assert plan.stage("answers_2").kwargs["judged"] is False  # no judge will see the samples


def test_an_unknown_early_stop_rule_fails_at_start_up():
    with pytest.raises(ConfigError, match="early_stop"):
        load_config(SynthConfig, str(CONFIGS / "laptop.yaml"), ["consensus.early_stop=sometimes"])
