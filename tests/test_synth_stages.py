"""Unit tests of the synthesis stages: geometry, filters, declared columns, drop reasons.

Most model stages run against ``ScriptedEngine``, a test double of the engine interface that
answers from a script (to pin exact replies); the reply frames, the consensus guard and the
difficulty filter are also run on real tiny models through the hf engine (the end of this file).
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
from PIL import Image
from synth_rows import new_row

from zwz_ray.config import EngineConfig
from zwz_ray.demo import render_scene
from zwz_ray.engines import ChatResult, Engine
from zwz_ray.images import encode_image
from zwz_ray.synth.columns import ALL_COLUMNS, drop, to_table
from zwz_ray.synth.config import (
    AnswersConfig,
    ConsensusConfig,
    CropConfig,
    DifficultyConfig,
    GroundingModelConfig,
    InputConfig,
    MCQConfig,
    OverlayConfig,
    ProposalConfig,
    QuestionsConfig,
    ValidationConfig,
)
from zwz_ray.synth.stages import (
    Answers,
    Consensus,
    Difficulty,
    Distractors,
    ImagePool,
    MCQAssembly,
    MicroCrop,
    MissingColumnsError,
    OutputRows,
    Overlay,
    Proposal,
    Questions,
    Sam3Grounding,
    Stage,
    Validation,
    VLMGrounding,
)
from zwz_ray.synth.stages.s12_output import item_id

W, H = 1600, 1280
ALL_STAGES = [ImagePool, Proposal, Sam3Grounding, VLMGrounding, MicroCrop, Questions, Validation, Answers, Consensus,
              Overlay, Distractors, MCQAssembly, Difficulty, OutputRows]


class ScriptedEngine(Engine):
    """Test double: ``reply(request)`` gives the texts (or a ChatResult) for each request."""

    def __init__(self, reply, label="scripted", max_pixels=None):
        super().__init__(EngineConfig(model=label, max_pixels=max_pixels))
        self.reply = reply
        self.batches: list[list] = []

    @property
    def requests(self):
        return [r for batch in self.batches for r in batch]

    def _chat(self, requests):
        self.batches.append(list(requests))
        out = []
        for req in requests:
            value = self.reply(req)
            out.append(value if isinstance(value, ChatResult) else ChatResult(texts=list(value), prompt_tokens=11, completion_tokens=3))
        return out


def replies(*texts):
    return lambda req: [texts[0]] * req.sampling.n if len(texts) == 1 else list(texts)


def run(stage: Stage, rows: list[dict]) -> list[dict]:
    return stage(to_table(rows)).to_pylist()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    img, _ = render_scene(0, 0, (W, H))
    path.write_bytes(encode_image(img, "PNG"))
    return str(path)


def image_row(source: str) -> dict:
    return {**new_row(source), "image_width": W, "image_height": H}


def object_row(source: str, index: int = 0, box=(100, 120, 300, 260)) -> dict:
    box = list(map(float, box))
    return {**image_row(source), "object_index": index, "n_objects": 3, "object_name": "red cup", "grounding_box": box}


def crop_png(size=(200, 140), color=(200, 30, 30)) -> bytes:
    return encode_image(Image.new("RGB", size, color), "PNG")


def question_row(source: str, q: str = "What colour is the cup?", index: int = 0) -> dict:
    row = object_row(source)
    row.update(question_index=index, n_questions=2, question=q, question_type="color", crop=crop_png(),
               bbox=[100, 120, 300, 260])
    return row


def mcq_row(source: str) -> dict:
    row = question_row(source)
    row.update(image=crop_png((400, 300)), overlay_question=row["question"] + "\nFocus only on the objects inside the red box.",
               answer_text="red", teacher_answers=["red"] * 8, consistency=1.0)
    return row


# --------------------------------------------------------------------------- declarations and the base class


def test_every_stage_declares_columns_that_exist():
    for cls in ALL_STAGES:
        assert cls.reads and cls.writes, cls
        assert set(cls.reads) <= set(ALL_COLUMNS) and set(cls.writes) <= set(ALL_COLUMNS), cls
        assert cls.level_in <= cls.level_out


def test_missing_columns_fail_with_their_names():
    stage = MicroCrop(CropConfig(), InputConfig())
    with pytest.raises(MissingColumnsError, match="grounding_box") as err:
        stage(pa.table({"source": ["a.png"], "image_width": [W]}))
    assert "image_height" in str(err.value) and "'crop'" in str(err.value)


def test_dropped_rows_pass_through_without_model_calls(scene):
    engine = ScriptedEngine(replies('{"objects": ["red cup", "blue sign", "white flag"]}'))
    stage = Proposal(EngineConfig(model="scripted"), ProposalConfig(), InputConfig(), engine=engine)
    dead = drop(image_row("gone.png"), "image_pool", "not_an_image", "x")
    out = run(stage, [dead, image_row(scene)])
    assert len(engine.requests) == 1
    assert out[0]["source"] == "gone.png" and out[0]["drop_reason"] == "not_an_image" and out[0]["object_index"] == -1
    assert [r["object_name"] for r in out[1:]] == ["red cup", "blue sign", "white flag"]


def test_usage_is_booked_once_per_batch(scene):
    engine = ScriptedEngine(replies('{"objects": ["red cup", "blue sign", "white flag"]}'))
    stage = Proposal(EngineConfig(model="scripted"), ProposalConfig(), InputConfig(), engine=engine)
    out = run(stage, [image_row(scene), image_row(scene)])
    usages = [json.loads(r["usage"]) for r in out if r["usage"]]
    assert len(usages) == 1  # the first output row carries the whole batch's cost
    models = usages[0]["proposal"]["models"]["scripted"]
    assert models["calls"] == 2 and models["prompt_tokens"] == 22 and usages[0]["proposal"]["busy_s"] > 0


class Exploding(Stage):
    name = "exploding"
    reads = ("source",)
    writes = ("object_name",)

    def process(self, rows):
        if any(r["source"] == "bad" for r in rows):
            raise ValueError("boom")
        return [[{**r, "object_name": "ok"}] for r in rows]


def test_a_failing_row_is_dropped_and_the_rest_processed():
    out = run(Exploding(), [new_row("good"), new_row("bad")])
    assert out[0]["object_name"] == "ok" and out[0]["drop_stage"] is None
    assert out[1]["drop_reason"] == "stage_error" and "boom" in out[1]["drop_detail"]


# --------------------------------------------------------------------------- CPU stages


def test_image_pool_reads_size_and_rejects_small_sides(tmp_path, scene):
    small = tmp_path / "small.png"
    Image.new("RGB", (1600, 1200)).save(small)  # height exactly 1200: rejected (<= 1200)
    out = run(ImagePool(InputConfig()), [new_row(scene), new_row(str(small))])
    assert (out[0]["image_width"], out[0]["image_height"], out[0]["drop_stage"]) == (W, H, None)
    assert out[1]["drop_reason"] == "too_small" and "1600x1200" in out[1]["drop_detail"]


def test_micro_crop_clamps_upscales_and_filters(scene):
    stage = MicroCrop(CropConfig(), InputConfig())
    rows = [object_row(scene, 0, (-50, -40, 150, 110)),  # clamped to (0, 0, 150, 110)
            object_row(scene, 1, (2000, 10, 2100, 50)),  # outside the image: empty
            object_row(scene, 2, (0, 0, 600, 400)),  # 600 * 400 / (1600 * 1280) = 11.7% >= 10%
            object_row(scene, 3, (10.4, 20.6, 110.2, 90.1))]
    out = run(stage, rows)
    assert out[0]["bbox"] == [0, 0, 150, 110]
    crop = Image.open(io.BytesIO(out[0]["crop"]))
    assert crop.size == (300, 220)
    reference = Image.open(scene).convert("RGB").crop((0, 0, 150, 110)).resize((300, 220), Image.Resampling.LANCZOS)
    assert crop.tobytes() == reference.tobytes()
    assert out[1]["drop_reason"] == "empty_box" and out[1]["crop"] is None
    assert out[2]["drop_reason"] == "box_too_large"
    assert out[3]["bbox"] == [10, 20, 111, 91]


def test_overlay_draws_the_expanded_red_box_once_per_object(scene):
    stage = Overlay(OverlayConfig(), InputConfig())
    rows = [question_row(scene, "How many dots?", 0), question_row(scene, "What colour?", 1)]
    for r in rows:
        r["bbox"] = [200, 300, 400, 500]
    out = run(stage, rows)
    assert out[0]["image"] == out[1]["image"]
    img = Image.open(io.BytesIO(out[0]["image"])).convert("RGB")
    assert img.size == (W, H)
    # 5% of the 200 px box = 10 px out on each side: the 5-px line starts at x=190 and y=290
    assert img.getpixel((190, 400)) == (255, 0, 0) and img.getpixel((194, 400)) == (255, 0, 0)
    assert img.getpixel((300, 290)) == (255, 0, 0)
    assert out[0]["overlay_question"] == "How many dots?\n\nAnswer using only what lies inside the red bounding box drawn on the image."


def test_output_ids_are_stable_and_distinct(scene):
    row = mcq_row(scene)
    row.update(problem="p", answer="A")
    out = run(OutputRows({"prompt_version": "v"}), [row, {**row, "question": "Another?"}])
    assert out[0]["id"] == item_id(scene, [100, 120, 300, 260], "What colour is the cup?")
    assert out[0]["id"] != out[1]["id"]
    assert json.loads(out[0]["provenance"])["prompt_version"] == "v"


# --------------------------------------------------------------------------- proposal and grounding


def proposal_stage(reply):
    engine = ScriptedEngine(reply, max_pixels=50176)
    return Proposal(EngineConfig(model="scripted", max_pixels=50176), ProposalConfig(), InputConfig(), engine=engine), engine


def test_proposal_fans_out_cleaned_names(scene):
    names = ["1. red cup", "2. x", "blue sign", "Blue Sign", "white flag.", "- green star"]  # valid for the schema
    stage, engine = proposal_stage(replies(json.dumps({"objects": names})))
    out = run(stage, [image_row(scene)])
    assert [r["object_name"] for r in out] == ["red cup", "blue sign", "white flag", "green star"]
    assert [r["object_index"] for r in out] == [0, 1, 2, 3] and {r["n_objects"] for r in out} == {4}
    request = engine.requests[0]
    assert request.json_schema is not None
    image = [p for p in request.messages[0]["content"] if p["type"] == "image"][0]["image"]
    assert image.width * image.height <= 50176  # shrunk to the engine's pixel budget before sending


@pytest.mark.parametrize("text,reason", [
    ('{"objects": ["red cup", "blue sign"]}', "too_few_objects"),
    ("", "unparseable_output"),
    ("I see a cup and a sign.", "unparseable_output"),
    ('{"objects": "red cup"}', "unparseable_output"),
])
def test_proposal_drops_with_a_reason(scene, text, reason):
    stage, _ = proposal_stage(replies(text))
    (row,) = run(stage, [image_row(scene)])
    assert (row["drop_stage"], row["drop_reason"]) == ("proposal", reason)


def test_engine_errors_become_drops(scene):
    stage, _ = proposal_stage(lambda req: ChatResult(error="http_500"))
    (row,) = run(stage, [image_row(scene)])
    assert (row["drop_reason"], row["drop_detail"]) == ("engine_error", "http_500")


def sam3_stage(found, threshold=0.75):
    stage = Sam3Grounding(GroundingModelConfig(score_threshold=threshold), InputConfig(), model=object(), processor=object())
    stage.detect = lambda image, names: [found[n] for n in names]
    return stage


def test_sam3_keeps_only_one_confident_instance(scene):
    found = {
        "red cup": ([0.9], [[10.0, 20.0, 50.0, 60.0]]),
        "blue sign": ([], []),
        "white flag": ([0.8, 0.7], [[0, 0, 5, 5], [9, 9, 20, 20]]),
        "green star": ([0.6], [[1, 1, 2, 2]]),
    }
    rows = [{**object_row(scene, i), "object_name": name} for i, name in enumerate(found)]
    out = run(sam3_stage(found), rows)
    assert out[0]["grounding_box"] == [10.0, 20.0, 50.0, 60.0] and out[0]["grounding_score"] == pytest.approx(0.9)
    assert [r["drop_reason"] for r in out[1:]] == ["no_box", "not_unique", "low_score"]


def test_sam3_tiny_model_grounds_every_name(scene):
    stage = Sam3Grounding(GroundingModelConfig(model="tiny:sam3", device="cpu"), InputConfig())
    image = Image.open(scene).convert("RGB")
    names = ["red cup", "a very long object name " * 4, "x"]  # longer than SAM3's 32 text tokens
    found = stage.detect(image, names)
    assert len(found) == 3 and stage.counters()["tiny:sam3"]["samples"] == 3
    for scores, boxes in found:
        assert len(scores) == len(boxes)
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 <= x2 <= W + 1 and 0 <= y1 <= y2 <= H + 1


def test_vlm_grounding_maps_absolute_and_relative_boxes(scene):
    cfg = EngineConfig(model="scripted", max_pixels=224 * 224)
    engine = ScriptedEngine(replies('{"box": [28, 56, 84, 112]}'))
    stage = VLMGrounding(cfg, GroundingModelConfig(backend="vlm", coords="absolute"), InputConfig(), engine=engine)
    (row,) = run(stage, [object_row(scene)])
    view = [p for p in engine.requests[0].messages[0]["content"] if p["type"] == "image"][0]["image"]
    assert view.width % 28 == 0 and view.height % 28 == 0 and view.width * view.height <= 224 * 224
    sx, sy = W / view.width, H / view.height
    assert row["grounding_box"] == pytest.approx([28 * sx, 56 * sy, 84 * sx, 112 * sy])
    engine = ScriptedEngine(replies('{"box": [100, 250, 200, 500]}'))
    stage = VLMGrounding(cfg, GroundingModelConfig(backend="vlm", coords="relative1000"), InputConfig(), engine=engine)
    (row,) = run(stage, [object_row(scene)])
    assert row["grounding_box"] == pytest.approx([160.0, 320.0, 320.0, 640.0])


# --------------------------------------------------------------------------- questions and validation


def questions_stage(reply):
    engine = ScriptedEngine(reply)
    return Questions(EngineConfig(model="scripted"), QuestionsConfig(), engine=engine), engine


def test_questions_fan_out_and_mark_duplicates(scene):
    qs = [{"type": "color", "question": "What colour is the cup?"}, {"type": "counting", "question": "How many dots?"},
          {"type": "color", "question": "what colour is the cup"}]
    stage, engine = questions_stage(replies(json.dumps({"questions": qs})))
    row = {**object_row(scene), "crop": crop_png(), "object_name": "zebra-striped thermos"}
    out = run(stage, [row])
    assert [r["question_index"] for r in out] == [0, 1, 2] and {r["n_questions"] for r in out} == {3}
    assert [r["drop_reason"] for r in out] == [None, None, "duplicate_question"]
    request = engine.requests[0]
    assert (request.sampling.temperature, request.sampling.top_p) == (0.9, 0.8)
    content = request.messages[0]["content"]
    assert len([p for p in content if p["type"] == "image"]) == 1  # the crop only
    text = content[-1]["text"]
    assert text.count("\n- ") >= 15  # 15 seed examples steer the style
    assert "thermos" not in text.lower() and "zebra" not in text.lower()  # never told the grounded object's name
    assert "object_name" not in Questions.reads
    run(stage, [row])
    assert engine.requests[1].messages[0]["content"][-1]["text"] == text  # the same examples for the same row


def test_no_questions_is_a_drop(scene):
    stage, _ = questions_stage(replies('{"questions": []}'))
    (row,) = run(stage, [{**object_row(scene), "crop": crop_png()}])
    assert (row["drop_reason"], row["question_index"]) == ("no_questions", -1)


def test_validation_sees_full_image_and_crop(scene):
    long_reasoning = "1. The crop shows the cup. " * 40  # far beyond the old 300-character cap
    verdicts = {"What colour is the cup?": f"{long_reasoning}\nVALID: Yes\nVALID: No",  # the FIRST verdict decides
                "How many dots?": "Two similar dot groups exist.\n**VALID:** No",
                "Which one?": "I am not sure."}
    engine = ScriptedEngine(lambda req: [verdicts[next(q for q in verdicts if q in req.messages[0]["content"][-1]["text"])]])
    stage = Validation(EngineConfig(model="scripted"), ValidationConfig(), InputConfig(), engine=engine)
    out = run(stage, [question_row(scene, q) for q in verdicts])
    assert out[0]["drop_stage"] is None and out[0]["validation_reason"] == " ".join(long_reasoning.split())
    assert out[1]["drop_reason"] == "invalid_question" and out[1]["drop_detail"] == "Two similar dot groups exist."
    assert out[2]["drop_reason"] == "unparseable_output"
    request = engine.requests[0]
    images = [p["image"] for p in request.messages[0]["content"] if p["type"] == "image"]
    assert [im.size for im in images] == [(W, H), (200, 140)]  # full image first, then the crop
    assert (request.sampling.temperature, request.sampling.top_p) == (0.3, 0.9)
    assert request.grammar is None and request.json_schema is None  # free reasoning by default


# --------------------------------------------------------------------------- answers, consensus, MCQ, difficulty


def test_answers_take_all_samples_in_one_request(scene):
    texts = ["Looking closely, the cup is red.\n\\boxed{red}", "no box here", "First \\boxed{pink}, no: \\boxed{ dark  red }"]
    engine = ScriptedEngine(lambda req: texts)
    stage = Answers(EngineConfig(model="scripted"), AnswersConfig(), engine=engine)
    row = {**question_row(scene), "teacher_answers": ["red"] * 4}
    (out,) = run(stage, [row])
    request = engine.requests[0]
    assert len(engine.requests) == 1 and request.sampling.n == 4
    assert (request.sampling.temperature, request.sampling.top_p) == (0.7, 0.9) and request.sampling.max_tokens >= 4096
    assert request.grammar is None and request.json_schema is None  # free reasoning by default
    assert out["teacher_answers"] == ["red"] * 4 + ["red", "", "dark red", ""]  # no box and missing count as ""


def test_a_200_character_ocr_answer_reaches_consensus(scene):
    """Eight teachers read a long sign; their boxed answers (spacing and case aside) agree."""
    sign = "CAUTION: WET FLOOR. PLEASE USE THE NORTH ENTRANCE WHILE CLEANING IS IN PROGRESS. " * 3
    assert len(sign.strip()) > 200
    spellings = [sign, sign.lower(), "  " + sign.replace(" ", "  "), sign]
    engine = ScriptedEngine(lambda req: [f"Reading the sign word by word.\n\\boxed{{{t}}}" for t in spellings])
    answers = Answers(EngineConfig(model="scripted"), AnswersConfig(), engine=engine)
    rows = run(answers, [question_row(scene, "What does the yellow sign say?")])
    rows = run(answers, rows)  # a second answerer, the same four spellings
    (out,) = run(Consensus(ConsensusConfig(), None, expected_samples=8), rows)
    assert out["drop_stage"] is None and out["consistency"] == 1.0 and out["consensus_by"] == "normalizer"
    assert out["answer_text"] == " ".join(sign.split())


def judge_reply(req):
    text = req.messages[0]["content"][-1]["text"]
    a = text.split("Answer 1: ")[1].split("\n")[0]
    b = text.split("Answer 2: ")[1].split("\n")[0]
    same = {a, b} <= {"crimson", "red"} or {a, b} <= {"5", "five"}
    return [json.dumps({"same": "Yes" if same else "No"})]


def test_consensus_pairwise_normaliser_then_one_judge_call_per_batch(scene):
    engine = ScriptedEngine(judge_reply, label="judge")
    stage = Consensus(ConsensusConfig(mode="pairwise"), EngineConfig(model="judge"), engine=engine, expected_samples=8)
    rows = [
        {**question_row(scene, "Q1"), "teacher_answers": ["5", "five", "5", "5.0", "5", "5", "6", "5"]},  # normaliser
        {**question_row(scene, "Q2"), "teacher_answers": ["red", "red", "crimson", "crimson", "red", "red", "blue", "red"]},
        {**question_row(scene, "Q3"), "teacher_answers": ["red", "blue", "green", "crimson", "red", "pink", "red", "red"]},
        {**question_row(scene, "Q4"), "teacher_answers": ["red", "red", "red", "red", "red", "red"]},  # 2 samples missing
    ]
    out = run(stage, rows)
    assert len(engine.batches) == 1  # every pair of the batch in ONE engine call
    assert (out[0]["answer_text"], out[0]["consistency"], out[0]["consensus_by"]) == ("5", 0.875, "normalizer")
    assert (out[1]["answer_text"], out[1]["consistency"], out[1]["consensus_by"]) == ("red", 0.875, "judge")
    assert out[2]["drop_reason"] == "no_consensus" and out[2]["consistency"] == pytest.approx(0.625)
    assert out[3]["drop_stage"] is None and out[3]["consistency"] == 0.75  # 6 of 8 is exactly the threshold


def test_consensus_without_judge_uses_the_normaliser():
    stage = Consensus(ConsensusConfig(), None, expected_samples=8)
    row = {**question_row("x.png"), "teacher_answers": ["red", "crimson"] * 4}
    (out,) = run(stage, [row])
    assert out["drop_reason"] == "no_consensus" and stage.engines() == {}


def test_distractors_come_from_the_overlay_image(scene):
    engine = ScriptedEngine(replies("Other plausible colours:\n\\boxed{blue}\n\\boxed{green}\n\\boxed{a pale yellow-green}"))
    stage = Distractors(EngineConfig(model="scripted"), MCQConfig(), engine=engine)
    (row,) = run(stage, [mcq_row(scene)])
    assert row["distractors"] == ["blue", "green", "a pale yellow-green"]
    request = engine.requests[0]
    images = [p["image"] for p in request.messages[0]["content"] if p["type"] == "image"]
    assert [im.size for im in images] == [(400, 300)]  # the overlay, not the crop
    assert (request.sampling.temperature, request.sampling.max_tokens) == (0.8, 1024) and request.grammar is None


def test_distractors_are_asked_again_until_enough_are_usable(scene):
    script = iter(["\\boxed{Red}\n\\boxed{blue}", "\\boxed{blue}\n\\boxed{green}\n\\boxed{white}", "unused"])
    engine = ScriptedEngine(lambda req: [next(script)])
    stage = Distractors(EngineConfig(model="scripted"), MCQConfig(), engine=engine)
    (row,) = run(stage, [mcq_row(scene)])
    assert len(engine.requests) == 2 and engine.requests[0].sampling.seed != engine.requests[1].sampling.seed
    assert row["distractors"] == ["Red", "blue", "blue", "green", "white"]  # pooled; "Red" is the answer, cleaned later
    never = ScriptedEngine(replies("\\boxed{red}"))
    (row,) = run(Distractors(EngineConfig(model="scripted"), MCQConfig(max_attempts=3), engine=never), [mcq_row(scene)])
    assert len(never.requests) == 3  # bounded
    (out,) = run(MCQAssembly(MCQConfig()), [row])
    assert out["drop_reason"] == "too_few_distractors"


def test_mcq_is_seeded_and_points_at_the_answer(scene):
    row = {**mcq_row(scene), "distractors": ["blue", "green", "yellow"]}
    first, second = run(MCQAssembly(MCQConfig()), [row, dict(row)])
    assert first["answer"] == second["answer"] and first["options"] == second["options"]
    assert first["options"][ord(first["answer"]) - ord("A")] == "red"
    assert sorted(first["options"]) == ["blue", "green", "red", "yellow"]
    assert first["problem"].startswith(row["overlay_question"]) and "A. " in first["problem"]
    other = run(MCQAssembly(MCQConfig(seed=1)), [dict(row, question=q) for q in ("a?", "b?", "c?", "d?", "e?")])
    assert len({r["answer"] for r in other}) > 1  # the seed differs per question


def test_mcq_with_too_few_distractors_is_dropped(scene):
    row = {**mcq_row(scene), "distractors": ["Red", "green", "green"]}
    (out,) = run(MCQAssembly(MCQConfig()), [row])
    assert out["drop_reason"] == "too_few_distractors"


def difficulty_row(scene) -> dict:
    return {**mcq_row(scene), "problem": "Q\nA. red\nB. blue\nC. green\nD. pink", "answer": "A",
            "options": ["red", "blue", "green", "pink"]}


@pytest.mark.parametrize("picks,kept", [(["A", "B", "C", "D"], True), (["A", "A", "C", "D"], False), (["A"] * 4, False)])
def test_difficulty_drops_items_the_student_already_solves(scene, picks, kept):
    engine = ScriptedEngine(lambda req: [f"Step by step: the box shows a cup.\n\\boxed{{{p}}}" for p in picks])
    stage = Difficulty(EngineConfig(model="scripted"), DifficultyConfig(), engine=engine)
    (out,) = run(stage, [difficulty_row(scene)])
    request = engine.requests[0]
    assert (request.sampling.n, request.sampling.temperature) == (4, 1.0) and request.sampling.max_tokens >= 4096
    assert request.grammar is None and request.json_schema is None  # the student reasons freely
    assert "\\boxed{}" in request.messages[0]["content"][-1]["text"]
    assert out["difficulty_correct"] == picks.count("A") and out["difficulty_checked"] is True
    assert (out["drop_stage"] is None) == kept
    if not kept:
        assert out["drop_reason"] == "too_easy"


def test_difficulty_counts_by_the_cascade(scene):
    texts = ["It is the first one.\n\\boxed{A}",  # letter
             "<answer>red</answer>",  # the option's text
             "The cup looks crimson to me.\n\\boxed{crimson}",  # rules cannot decide: wrong without a judge
             "\\boxed{B}"]
    engine = ScriptedEngine(lambda req: texts)
    (out,) = run(Difficulty(EngineConfig(model="scripted"), DifficultyConfig(), engine=engine), [difficulty_row(scene)])
    assert out["difficulty_correct"] == 2 and out["drop_reason"] == "too_easy"
    assert "exact, mcq_option_text, undecided, mcq_letter" in out["drop_detail"]
    # one right, one undecided: now the judge decides (and only that sample goes to it)
    texts[1] = "\\boxed{C}"
    judge = ScriptedEngine(lambda req: ['{"equivalent": true}'], label="judge")
    stage = Difficulty(EngineConfig(model="scripted"), DifficultyConfig(), EngineConfig(model="judge"), judge_engine=judge, engine=engine)
    (out,) = run(stage, [difficulty_row(scene)])
    assert len(judge.requests) == 1 and "crimson" in judge.requests[0].messages[0]["content"][-1]["text"]
    assert out["difficulty_correct"] == 2 and "llm_judge" in out["drop_detail"]
    assert not run(Difficulty(EngineConfig(model="scripted"), DifficultyConfig(), engine=engine), [difficulty_row(scene)])[0]["drop_stage"]


def test_difficulty_student_failure_is_a_drop_or_kept_unchecked(scene):
    failing = ScriptedEngine(lambda req: ChatResult(error="timeout"))
    (out,) = run(Difficulty(EngineConfig(model="scripted"), DifficultyConfig(), engine=failing), [difficulty_row(scene)])
    assert (out["drop_stage"], out["drop_reason"], out["drop_detail"]) == ("difficulty", "engine_error", "timeout")
    stage = Difficulty(EngineConfig(model="scripted"), DifficultyConfig(on_error="keep"), engine=failing)
    (out,) = run(stage, [difficulty_row(scene)])
    assert out["drop_stage"] is None and out["difficulty_checked"] is False and out["difficulty_correct"] is None
    assert json.loads(out["usage"])["difficulty"]["flags"] == {"unchecked": 1}


# --------------------------------------------------------------------------- real tiny models (hf engine)




@pytest.fixture(scope="module")
def tiny_judge():
    from zwz_ray.engines import build_engine

    cfg = EngineConfig(backend="hf", model="tiny:text", device="cpu")
    engine = build_engine(cfg)
    yield cfg, engine
    engine.close()


def test_tiny_teacher_closes_every_framed_reply(scene, tiny_vlm):
    """A random model never closes free text; the grammar frames make every reply readable."""
    cfg, engine = tiny_vlm
    answers = Answers(cfg, AnswersConfig(frame="boxed_grammar", frame_reasoning_chars=12, answer_max_chars=24, max_tokens=64),
                      engine=engine)
    (row,) = run(answers, [question_row(scene)])
    assert len(row["teacher_answers"]) == 4 and all(0 < len(a) <= 24 for a in row["teacher_answers"])
    validation = Validation(cfg, ValidationConfig(frame="verdict_grammar", frame_reasoning_chars=20, max_tokens=48),
                            InputConfig(), engine=engine)
    out = run(validation, [question_row(scene, q) for q in ("What colour is the cup?", "How many dots?")])
    for r in out:  # every reply parsed: a verdict either way, with its reasoning
        assert r["drop_reason"] in (None, "invalid_question")
        assert r["validation_reason"] if r["drop_reason"] is None else r["drop_detail"]
    distractors = Distractors(cfg, MCQConfig(frame="boxed_grammar", frame_reasoning_chars=8, option_max_chars=8,
                                             max_tokens=64, max_attempts=1), engine=engine)
    (row,) = run(distractors, [mcq_row(scene)])
    assert len(row["distractors"]) == 3


def test_tiny_student_difficulty_with_a_letter_frame_and_free_reasoning(scene, tiny_vlm, tiny_judge):
    cfg, engine = tiny_vlm
    framed = DifficultyConfig(frame="boxed_grammar", frame_reasoning_chars=12, max_tokens=32)
    stage = Difficulty(cfg, framed, tiny_judge[0], judge_engine=tiny_judge[1], engine=engine)
    (out,) = run(stage, [difficulty_row(scene)])
    assert out["difficulty_checked"] is True and 0 <= out["difficulty_correct"] <= 4
    assert tiny_judge[1].stats.calls == 0  # a boxed letter is decided by the rules: no judge call
    free = Difficulty(cfg, DifficultyConfig(max_tokens=12, judge=False), engine=engine)
    (out,) = run(free, [difficulty_row(scene)])
    assert out["difficulty_checked"] is True and out["difficulty_correct"] is not None


def test_tiny_judge_majority_that_matches_no_sample_is_rejected(tiny_judge):
    """The holistic judge is a random tiny model here: what it calls the majority is no sample's answer,
    so the guard rejects it, records the flag and the normaliser decides."""
    cfg, engine = tiny_judge
    before = engine.stats.calls
    stage = Consensus(ConsensusConfig(judge_reasoning_chars=16, judge_max_tokens=96), cfg, engine=engine, expected_samples=8)
    rows = [{**question_row("x.png", "Q1"), "teacher_answers": ["red", "red", "red", "red", "crimson", "crimson", "blue", ""]},
            {**question_row("x.png", "Q2"), "teacher_answers": ["5"] * 7 + ["6"]}]  # the normaliser decides alone
    out = run(stage, rows)
    assert engine.stats.calls - before == 1  # only Q1 needed the judge
    assert (out[0]["drop_reason"], out[0]["consensus_by"]) == ("judge_rejected", "judge_rejected")
    assert "matches no sample" in out[0]["drop_detail"] or "unusable" in out[0]["drop_detail"]
    assert json.loads(out[0]["usage"])["consensus"]["flags"] == {"judge_rejected": 1}
    assert (out[1]["drop_stage"], out[1]["answer_text"], out[1]["consensus_by"]) == (None, "5", "normalizer")


def test_seeds_follow_the_image_name_not_its_folder():
    # `ray job submit` unpacks the working directory under a new path each time: the rows must not change
    from zwz_ray.synth.stages.base import row_seed, source_key

    here = {"source": "/tmp/run1/demo/scene_003.png", "object_index": 2, "question_index": 1}
    moved = {**here, "source": "s3://bucket/elsewhere/scene_003.png"}
    assert source_key(here["source"]) == "scene_003.png"
    assert row_seed(0, "answers_1", here) == row_seed(0, "answers_1", moved)
    assert row_seed(0, "answers_1", here) != row_seed(0, "answers_1", {**here, "source": "/tmp/run1/demo/scene_004.png"})
    assert row_seed(0, "answers_1", here) != row_seed(0, "answers_2", here)
